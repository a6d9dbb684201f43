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
* `read_audio` — decode the first audio stream of any audio/video file with PyAV.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "read_audio",
    "integrated_loudness",
    "true_peak_dbtp",
    "clipping_runs",
    "phase_correlation",
    "leading_trailing_silence",
    "drop_lfe",
]

LFE_INDEX = 3  # FL FR FC LFE BL BR (SMPTE / FFmpeg 5.1 order)


def _as_2d(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    return x[:, None] if x.ndim == 1 else x


def drop_lfe(samples: np.ndarray) -> np.ndarray:
    """Drop the LFE channel of a > 5 channel signal and keep at most 5 channels (what pyloudnorm can weight)."""
    x = _as_2d(samples)
    if x.shape[1] > 5:
        x = np.delete(x, LFE_INDEX, axis=1)[:, :5]
    return x


def read_audio(path: str | Path, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` (any audio or video file) to ``([n, ch] float32, sample_rate)``.

    With `sr`, the audio is resampled to that rate (channel count kept). Raises ``ValueError`` when the file has
    no audio stream; PyAV errors propagate.
    """
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = sr or stream.codec_context.sample_rate
        layout = stream.codec_context.layout
        channels = stream.codec_context.channels or (layout.nb_channels if layout else 1)
        resampler = av.AudioResampler(format="fltp", layout=layout if layout and layout.nb_channels else channels,
                                      rate=rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
        except av.FFmpegError:
            pass  # keep what decoded; the probe reports the decode error
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return np.zeros((0, channels), dtype=np.float32), int(rate)
    data = np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False)
    return np.ascontiguousarray(data), int(rate)


def integrated_loudness(samples: np.ndarray, sr: int) -> float:
    """BS.1770 integrated loudness in LUFS (``-inf`` for silence, ``nan`` if shorter than 0.4 s)."""
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


def true_peak_dbtp(samples: np.ndarray, sr: int, oversample: int = 4) -> float:
    """True peak in dBTP from the `oversample`-times (default 4x) polyphase-upsampled signal."""
    from scipy.signal import resample_poly

    x = _as_2d(samples).astype(np.float64)
    if x.size == 0:
        return float("-inf")
    peak = 0.0
    block = 1 << 18
    for start in range(0, x.shape[0], block):  # blocks keep memory bounded; overlap covers filter edges
        chunk = x[max(0, start - 64):start + block + 64]
        up = resample_poly(chunk, oversample, 1, axis=0)
        peak = max(peak, float(np.max(np.abs(up))), float(np.max(np.abs(chunk))))
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def clipping_runs(samples: np.ndarray, threshold: float = 0.999, min_run: int = 3) -> int:
    """Runs of at least `min_run` consecutive samples with ``|x| >= threshold``, summed over channels."""
    x = _as_2d(samples)
    total = 0
    for ch in range(x.shape[1]):
        mask = np.abs(x[:, ch]) >= threshold
        if not mask.any():
            continue
        edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        total += int(np.count_nonzero((ends - starts) >= min_run))
    return total


def phase_correlation(stereo: np.ndarray) -> float:
    """Normalised L/R correlation ``sum(L*R) / sqrt(sum(L^2) * sum(R^2))`` in -1..1.

    +1: the channels carry the same signal; about 0: unrelated (wide stereo); -1: one channel is
    polarity-inverted, so the mid (mono) energy vanishes and a mono downmix cancels the voice.
    ``nan`` for silence or fewer than two channels.
    """
    x = _as_2d(stereo).astype(np.float64)
    if x.shape[1] < 2 or x.shape[0] == 0:
        return float("nan")
    left, right = x[:, 0], x[:, 1]
    denom = math.sqrt(float(np.dot(left, left)) * float(np.dot(right, right)))
    if denom <= 1e-12:
        return float("nan")
    return float(np.dot(left, right) / denom)


def leading_trailing_silence(samples: np.ndarray, sr: int, threshold_db: float = -50.0,
                             window_s: float = 0.010) -> tuple[float, float]:
    """Seconds of silence before the first and after the last window louder than `threshold_db` dBFS RMS.

    The loudest channel decides per window. A fully silent signal returns its whole duration for both.
    """
    x = _as_2d(samples).astype(np.float64)
    n = x.shape[0]
    if n == 0:
        return 0.0, 0.0
    win = max(1, int(round(window_s * sr)))
    nwin = n // win
    duration = n / sr
    if nwin == 0:
        return duration, duration
    blocks = x[: nwin * win].reshape(nwin, win, x.shape[1])
    rms = np.sqrt(np.mean(blocks**2, axis=1)).max(axis=1)
    loud = np.flatnonzero(rms > 10 ** (threshold_db / 20.0))
    if loud.size == 0:
        return duration, duration
    lead = loud[0] * win / sr
    trail = max(0.0, duration - (loud[-1] + 1) * win / sr)
    return float(lead), float(trail)
