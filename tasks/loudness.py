"""Audio measurements, one function per measurement (lhotse style). Samples are ``[n, channels]`` float32 in -1..1.

Used by the data contracts (stage 2) and by normalize (stage 3, before/after loudness).

* `integrated_loudness` — ITU-R BS.1770 / EBU R128 integrated loudness (pyloudnorm), LUFS; ``-inf`` when the
  whole signal is below the absolute gate (silence); ``nan`` when shorter than one 400 ms gating block.
  pyloudnorm handles at most 5 channels (L, R, C, Ls, Rs): for more, the LFE channel (index 3 in the usual
  SMPTE order FL FR FC LFE ...) is dropped as BS.1770 requires, and anything beyond five is not measured.
* `true_peak_dbtp` — peak of the 4x oversampled signal (BS.1770 Annex 2), dBTP.
* `clipping_runs` — number of runs of at least ``min_run`` consecutive samples at or above ``threshold``.
* `phase_correlation` — normalised L/R correlation: +1 identical channels, 0 unrelated, -1 one channel inverted
  (a mono downmix cancels the voice).
* `leading_trailing_silence` — seconds of silence (10 ms windows below ``threshold_db`` dBFS RMS) at each end.
* `read_audio` — decode the first audio stream of any audio/video file with PyAV (whole file in memory).

The pipeline measures files with `lipline.tasks.audio_stream.measure_file` (same accumulators, constant memory).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lipline.tasks.audio_stream import (ClippingRuns, EdgeSilence, PhaseCorrelation, TruePeak, as_2d, drop_lfe,
                                        iter_audio)

__all__ = [
    "read_audio",
    "integrated_loudness",
    "true_peak_dbtp",
    "clipping_runs",
    "phase_correlation",
    "leading_trailing_silence",
    "drop_lfe",
]


def read_audio(path: str | Path, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` (any audio or video file) to ``([n, ch] float32, sample_rate)``.

    With `sr`, the audio is resampled to that rate (channel count kept). Raises ``ValueError`` when the file has
    no audio stream. Whole files in memory: use `lipline.tasks.audio_stream.measure_file` for long media.
    """
    chunks, rate = [], sr or 0
    for chunk, rate in iter_audio(path, sr=sr):
        chunks.append(chunk)
    if not chunks:
        import av

        with av.open(str(path), metadata_errors="ignore") as c:
            channels = c.streams.audio[0].codec_context.channels or 1 if c.streams.audio else 1
            rate = rate or (c.streams.audio[0].codec_context.sample_rate if c.streams.audio else 0)
        return np.zeros((0, channels), dtype=np.float32), int(rate)
    return np.concatenate(chunks), int(rate)


def integrated_loudness(samples: np.ndarray, sr: int) -> float:
    """BS.1770 integrated loudness in LUFS by pyloudnorm (``-inf`` for silence, ``nan`` if shorter than 0.4 s)."""
    import pyloudnorm

    x = drop_lfe(samples).astype(np.float64)
    if x.shape[0] < int(0.4 * sr) + 1:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        value = pyloudnorm.Meter(sr).integrated_loudness(x)
    value = float(value)
    if math.isnan(value) or value < -120:
        return float("-inf")
    return value


def _whole(meter, samples: np.ndarray):
    meter.add(samples)
    return meter.result()


def true_peak_dbtp(samples: np.ndarray, sr: int, oversample: int = 4) -> float:
    """True peak in dBTP from the `oversample`-times (default 4x) polyphase-upsampled signal."""
    x = as_2d(samples)
    return float("-inf") if x.size == 0 else _whole(TruePeak(oversample), x)


def clipping_runs(samples: np.ndarray, threshold: float = 0.999, min_run: int = 3) -> int:
    """Runs of at least `min_run` consecutive samples with ``|x| >= threshold``, summed over channels."""
    return _whole(ClippingRuns(threshold, min_run), samples)


def phase_correlation(stereo: np.ndarray) -> float:
    """Normalised L/R correlation ``sum(L*R) / sqrt(sum(L^2) * sum(R^2))`` in -1..1.

    +1: the channels carry the same signal; about 0: unrelated (wide stereo); -1: one channel is
    polarity-inverted, so the mid (mono) energy vanishes and a mono downmix cancels the voice.
    ``nan`` for silence or fewer than two channels.
    """
    return _whole(PhaseCorrelation(), stereo)


def leading_trailing_silence(samples: np.ndarray, sr: int, threshold_db: float = -50.0,
                             window_s: float = 0.010) -> tuple[float, float]:
    """Seconds of silence before the first and after the last window louder than `threshold_db` dBFS RMS.

    The loudest channel decides per window. A fully silent signal returns its whole duration for both.
    """
    return _whole(EdgeSilence(sr, threshold_db, window_s), samples)
