"""The streaming meters equal the whole-signal measurements, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lipline.tasks import loudness as ld
from lipline.tasks.audio_stream import LoudnessMeter, TruePeak, measure_file
from tests import media_factory as mf

SR = 48000


def chunked(meter, x: np.ndarray, sizes: list[int]):
    pos = 0
    i = 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        meter.add(x[pos:pos + n])
        pos += n
        i += 1
    return meter.result()


@pytest.fixture(scope="module")
def speechy() -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(7.3 * SR)) / SR
    env = (0.5 * (1 + np.sin(2 * np.pi * 3 * t))) ** 2 * (t % 2.5 > 0.6)  # syllables and real pauses
    left = env * np.sin(2 * np.pi * 220 * t) * 0.3 + 0.01 * rng.standard_normal(t.size)
    right = 0.7 * left + 0.05 * rng.standard_normal(t.size)
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.mark.parametrize("sizes", [[10**9], [4800], [1000, 7777, 123], [SR * 2 + 1]])
def test_streaming_loudness_equals_pyloudnorm(speechy, sizes):
    expected = ld.integrated_loudness(speechy, SR)
    assert chunked(LoudnessMeter(SR, 2), speechy, sizes) == pytest.approx(expected, abs=1e-6)


def test_streaming_loudness_at_44k1_and_mono_and_6ch():
    rng = np.random.default_rng(2)
    for sr, ch in ((44100, 1), (44100, 6), (16000, 2)):
        x = (0.1 * rng.standard_normal((int(3.7 * sr), ch))).astype(np.float32)
        assert chunked(LoudnessMeter(sr, ch), x, [3333]) == pytest.approx(ld.integrated_loudness(x, sr), abs=1e-6)


def test_true_peak_is_chunking_independent_and_matches_ffmpeg(speechy, tmp_path):
    x = speechy.copy()
    x[123457] = [0.95, -0.2]  # an isolated peak near a chunk edge
    sf.write(tmp_path / "x.wav", x, SR, subtype="FLOAT")
    _, reference = mf.ebur128(tmp_path / "x.wav")
    for sizes in ([10**9], [1000], [123457, 50], [61]):  # 61: chunks shorter than the filter context
        assert chunked(TruePeak(), x, sizes) == pytest.approx(reference, abs=0.1)


class CountingPeak(TruePeak):
    """`TruePeak` that counts the input samples it upsampled; ``skip=False`` upsamples everything."""

    def __init__(self, skip: bool = True) -> None:
        super().__init__()
        self.upsampled = 0
        if not skip:
            self.gain_bound = 1e300

    def _upsampled_peak(self, x, lo, hi):
        self.upsampled += hi - lo
        return super()._upsampled_peak(x, lo, hi)


@pytest.mark.parametrize("sizes", [[10**9], [1000], [123457, 50], [61], [SR * 10]])
def test_true_peak_upsamples_only_what_could_raise_it_and_finds_the_same_peak(speechy, sizes):
    rng = np.random.default_rng(7)
    x = np.concatenate([speechy, mf.faded(speechy, SR) * 0.5, 0.2 * rng.standard_normal((SR, 2))]).astype(np.float32)
    x[123457] = [0.95, -0.2]  # an isolated peak near a chunk edge
    x[200000:200002] = [[0.7, 0.7], [-0.7, -0.7]]  # an intersample peak above its samples
    x[5] = [0.99, 0.1]  # the loudest sample, within the first chunk's context (missed before when chunks were short)
    skipping, everything = CountingPeak(), CountingPeak(skip=False)
    assert chunked(skipping, x, sizes) == chunked(everything, x, sizes)  # the same value, not just close
    assert everything.upsampled == len(x)  # every sample scanned once, whatever the chunking
    assert skipping.result() == chunked(TruePeak(), x, [len(x)]) >= 20 * np.log10(0.99)
    if sizes[0] >= 1000:  # chunks of a few samples are each within reach of a block that could raise the peak
        assert skipping.upsampled < 0.3 * len(x), (skipping.upsampled, len(x))


@pytest.fixture(scope="module")
def dub_file(speechy, tmp_path_factory):
    """The speech-like signal between 1.2 s and 0.7 s of digital silence, with fades (no edge ringing)."""
    x = np.concatenate([np.zeros((int(1.2 * SR), 2)), mf.faded(speechy, SR), np.zeros((int(0.7 * SR), 2))])
    path = tmp_path_factory.mktemp("dub") / "dub.wav"
    sf.write(path, x.astype(np.float32), SR, subtype="FLOAT")
    return path, x.astype(np.float32)


def test_measure_file_against_independent_references(dub_file):
    """Loudness and true peak from ffmpeg's ebur128 filter, phase from numpy.corrcoef, silence by construction."""
    path, x = dub_file
    m = measure_file(path, chunk_s=0.37)
    assert (m.sample_rate, m.channels, m.samples) == (SR, 2, len(x))
    lufs, peak = mf.ebur128(path)
    assert m.integrated_lufs == pytest.approx(lufs, abs=0.1)
    assert m.true_peak_dbtp == pytest.approx(peak, abs=0.1)
    assert m.phase_correlation == pytest.approx(np.corrcoef(x[:, 0], x[:, 1])[0, 1], abs=2e-3)
    assert 0.6 < m.phase_correlation < 0.99
    assert (m.leading_silence_s, m.trailing_silence_s) == pytest.approx((1.2, 0.7), abs=0.011)
    assert m.clipping_runs == 0


def test_measure_file_counts_clipping_like_a_plain_count(speechy, tmp_path):
    hot = np.clip(speechy * 6.0, -1.0, 1.0)  # overdriven: many runs at full scale in both channels
    sf.write(tmp_path / "hot.wav", hot, SR, subtype="FLOAT")
    expected = mf.clipping_runs_reference(hot)
    assert expected > 50
    assert measure_file(tmp_path / "hot.wav", chunk_s=0.37).clipping_runs == expected


def test_clipping_runs_across_chunk_edges():
    from lipline.tasks.audio_stream import ClippingRuns

    x = np.zeros((100, 1), np.float32)
    x[8:12] = 1.0  # a run of 4 split 2 + 2 by a chunk edge at 10
    x[50:52] = 1.0  # too short
    x[97:100] = -1.0  # open at the very end
    assert chunked(ClippingRuns(), x, [10]) == 2 == ld.clipping_runs(x)
