"""Audio measurements against signals with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from lipline.tasks import loudness as ld
from tests import media_factory as mf

SR = 48000


def tone(amp: float, dur: float = 3.0, freq: float = 997.0, sr: int = SR, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def test_integrated_loudness_of_a_sine():
    # BS.1770: a 997 Hz sine in one channel reads 20*log10(A) - 3.01 LUFS
    assert ld.integrated_loudness(tone(0.1), SR) == pytest.approx(-23.0, abs=0.2)
    stereo = np.stack([tone(0.1), tone(0.1)], axis=1)
    assert ld.integrated_loudness(stereo, SR) == pytest.approx(-20.0, abs=0.2)


def test_silence_is_minus_inf_and_too_short_is_nan():
    assert ld.integrated_loudness(np.zeros((SR * 2, 2), np.float32), SR) == -math.inf
    assert math.isnan(ld.integrated_loudness(tone(0.1, dur=0.2), SR))


def test_lfe_dropped_for_more_than_five_channels():
    base = tone(0.1)
    six = np.zeros((base.size, 6), np.float32)
    six[:, 0] = six[:, 1] = base
    with_lfe = six.copy()
    with_lfe[:, 3] = tone(0.9, freq=60)
    assert ld.drop_lfe(six).shape[1] == 5
    assert ld.integrated_loudness(with_lfe, SR) == pytest.approx(ld.integrated_loudness(six, SR), abs=0.01)


@pytest.mark.parametrize("sr,freq", [(48000, 12000), (44100, 11025)])
def test_true_peak_uses_oversampling(sr, freq, tmp_path):
    """A sine at a quarter of the sample rate, phase 45°: every sample sits at A·sin(45°), 3 dB under the real peak
    A. A sample-peak meter reads -9.03 dB for A = 0.5; the true peak is -6.02 dBTP, and ffmpeg's meter agrees."""
    x = mf.faded(tone(0.5, freq=freq, sr=sr, phase=np.pi / 4), sr)
    sample_peak = 20 * math.log10(float(np.max(np.abs(x))))
    assert sample_peak == pytest.approx(-9.03, abs=0.01)
    tp = ld.true_peak_dbtp(x, sr)
    assert tp == pytest.approx(20 * math.log10(0.5), abs=0.05)
    sf.write(tmp_path / "x.wav", x, sr, subtype="FLOAT")
    assert tp == pytest.approx(mf.ebur128(tmp_path / "x.wav")[1], abs=0.1)
    assert ld.true_peak_dbtp(np.zeros(100, np.float32), 44100) == -math.inf


def test_clipping_runs():
    x = np.zeros((1000, 2), np.float32)
    x[100:105, 0] = 1.0       # run of 5
    x[200:202, 0] = -1.0      # run of 2: too short
    x[300:310, 1] = -0.9995   # run of 10 on the other channel
    assert ld.clipping_runs(x) == 2
    assert ld.clipping_runs(x, min_run=6) == 1
    assert ld.clipping_runs(np.clip(tone(0.5), -1, 1)) == 0
    # a clipped, noisy signal: as many runs as a plain per-channel count
    hot = np.clip(np.random.default_rng(3).standard_normal((SR, 2)) * 0.6, -1, 1).astype(np.float32)
    assert ld.clipping_runs(hot) == mf.clipping_runs_reference(hot) > 20


def test_phase_correlation():
    rng = np.random.default_rng(1)
    a = tone(0.3)
    assert ld.phase_correlation(np.stack([a, a], 1)) == pytest.approx(1.0, abs=1e-6)
    assert ld.phase_correlation(np.stack([a, -a], 1)) == pytest.approx(-1.0, abs=1e-6)
    noise = rng.standard_normal((SR, 2)).astype(np.float32)
    assert abs(ld.phase_correlation(noise)) < 0.05
    # partly correlated, partly inverted: numpy's Pearson coefficient (these signals have no DC)
    for mix in (0.8, 0.3, -0.5):
        pair = np.stack([a + 0.1 * noise[:, 0].repeat(3)[: a.size], mix * a + 0.2 * noise[:, 1].repeat(3)[: a.size]], 1)
        assert ld.phase_correlation(pair) == pytest.approx(np.corrcoef(pair[:, 0], pair[:, 1])[0, 1], abs=1e-3)
    assert math.isnan(ld.phase_correlation(a))
    assert math.isnan(ld.phase_correlation(np.zeros((100, 2))))


def test_leading_trailing_silence():
    x = np.concatenate([np.zeros(SR), tone(0.2, dur=2.0), np.zeros(SR // 2)])
    lead, trail = ld.leading_trailing_silence(x, SR)
    assert lead == pytest.approx(1.0, abs=0.011) and trail == pytest.approx(0.5, abs=0.011)
    # -60 dBFS hum counts as silence at the -50 dB threshold, not at -70
    hum = np.concatenate([tone(0.001, dur=1.0), tone(0.2, dur=1.0)])
    assert ld.leading_trailing_silence(hum, SR)[0] == pytest.approx(1.0, abs=0.011)
    assert ld.leading_trailing_silence(hum, SR, threshold_db=-70)[0] == 0.0
    assert ld.leading_trailing_silence(np.zeros(SR), SR) == (1.0, 1.0)


def test_read_audio_roundtrip_and_resample(tmp_path):
    x = np.stack([tone(0.25, dur=1.0), tone(0.5, dur=1.0)], axis=1)
    sf.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    y, sr = ld.read_audio(tmp_path / "a.wav")
    assert sr == SR and y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-6)
    z, sr16 = ld.read_audio(tmp_path / "a.wav", sr=16000)
    assert sr16 == 16000 and z.shape[1] == 2 and abs(z.shape[0] - 16000) <= 64


def test_read_audio_from_video(media):
    y, sr = ld.read_audio(media.video)
    assert sr == 44100 and y.shape[1] == 2 and y.shape[0] == pytest.approx(12 * 44100, rel=0.01)
    with pytest.raises(ValueError):
        ld.read_audio(media.intro)  # no audio stream
