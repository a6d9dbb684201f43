"""The speech energy envelope of an audio signal at the video frame rate.

The signal is mixed to mono, band-passed to the speech band (`SPEECH_BAND`, zero-phase so no delay is added) and
its RMS amplitude taken over each video frame's display interval: frame ``t`` covers samples
``[t·sr/fps, (t+1)·sr/fps)``. RMS amplitude (not power or dB) follows the mouth's opening most closely: both
grow with the syllable's loudness and fall to about zero in pauses.
"""

from __future__ import annotations

import numpy as np

SPEECH_BAND = (150.0, 4000.0)  # Hz: voice fundamentals to the upper formants; rumble and hiss are left out


def speech_envelope(samples: np.ndarray, sr: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """RMS amplitude of the speech band per video frame.

    Args:
        samples: (n,) or (n, channels) audio, any float or int dtype.
        sr: sample rate in Hz.
        fps: video frame rate.
        n_frames: frames wanted (default: every whole frame the audio covers); frames past the audio's end are NaN.
    Returns:
        (n_frames,) float64, ≥ 0 (NaN past the end of the audio).
    """
    if sr <= 0 or fps <= 0:
        raise ValueError(f"sample rate and fps must be > 0, got sr={sr}, fps={fps}")
    x = np.asarray(samples, dtype=np.float64)
    mono = x.mean(axis=1) if x.ndim == 2 else x  # [n, ch] -> [n]
    covered = int(np.floor(mono.size * fps / sr + 1e-9))
    n = covered if n_frames is None else int(n_frames)
    env = np.full(n, np.nan)
    m = min(n, covered)
    if m <= 0:
        return env
    band = _band_pass(mono, sr)
    bounds = np.round(np.arange(m + 1) * sr / fps).astype(np.int64)  # frame t = samples [bounds[t], bounds[t+1])
    sums = np.add.reduceat(band[:bounds[-1]] ** 2, bounds[:-1])
    env[:m] = np.sqrt(sums / np.diff(bounds))
    return env


def _band_pass(mono: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    low, high = SPEECH_BAND
    high = min(high, 0.45 * sr)
    if mono.size < 64 or high <= low:
        return mono
    sos = butter(4, [low, high], btype="bandpass", fs=sr, output="sos")
    return sosfiltfilt(sos, mono)
