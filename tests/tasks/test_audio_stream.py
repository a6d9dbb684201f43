"""The streaming meters equal the whole-signal measurements, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lipline.tasks import loudness as ld
from lipline.tasks.audio_stream import LoudnessMeter, TruePeak, measure_file

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


def test_true_peak_is_chunking_independent(speechy):
    whole = ld.true_peak_dbtp(speechy, SR)
    x = speechy.copy()
    x[123457] = [0.95, -0.2]  # an isolated peak near a chunk edge
    whole = ld.true_peak_dbtp(x, SR)
    for sizes in ([1000], [123457, 50], [7]):
        assert chunked(TruePeak(), x, sizes) == pytest.approx(whole, abs=1e-9)


def test_measure_file_matches_whole_file_functions(speechy, tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, speechy, SR, subtype="FLOAT")
    samples, sr = ld.read_audio(path)
    m = measure_file(path, chunk_s=0.37)
    assert (m.sample_rate, m.channels, m.samples) == (SR, 2, len(speechy))
    assert m.integrated_lufs == pytest.approx(ld.integrated_loudness(samples, sr), abs=1e-6)
    assert m.true_peak_dbtp == pytest.approx(ld.true_peak_dbtp(samples, sr), abs=1e-9)
    assert m.clipping_runs == ld.clipping_runs(samples)
    assert m.phase_correlation == pytest.approx(ld.phase_correlation(samples), abs=1e-9)
    assert (m.leading_silence_s, m.trailing_silence_s) == pytest.approx(ld.leading_trailing_silence(samples, sr))


def test_clipping_runs_across_chunk_edges():
    from lipline.tasks.audio_stream import ClippingRuns

    x = np.zeros((100, 1), np.float32)
    x[8:12] = 1.0  # a run of 4 split 2 + 2 by a chunk edge at 10
    x[50:52] = 1.0  # too short
    x[97:100] = -1.0  # open at the very end
    assert chunked(ClippingRuns(), x, [10]) == 2 == ld.clipping_runs(x)
