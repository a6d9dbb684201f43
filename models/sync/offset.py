"""Audio-visual offset by normalised cross-correlation of mouth opening and speech envelope.

1. Both series (one value per video frame) lose their slow trend: a centred moving mean over `DETREND_S` seconds
   is subtracted (head moving closer, a louder passage), leaving the syllable-rate movement.
2. For every lag ``L`` in ``-max_offset..+max_offset`` the Pearson correlation of ``mouth[t]`` with
   ``envelope[t + L]`` is taken over the frames where both are known (frames without a face are skipped, not
   filled). That is the correlation *curve*.
3. **Offset** = the lag of the curve's highest point. **Sign: + = audio late** (the sound comes ``L`` frames after
   the mouth movement that made it); − = audio early.
4. **peak_corr** = the curve at that lag. **Confidence** = how far the peak stands above the rest of the curve
   (lags more than `PEAK_HALF_WIDTH` frames from the peak), in units of the correlation noise of *unrelated*
   series of this length: ``(peak_corr − median(rest)) / σ₀`` with Bartlett's ``σ₀² = (1 + 2 Σₖ ρ_m(k) ρ_e(k)) / N``
   (ρ: each detrended series' autocorrelation, k up to 2 s; N: frames used). Unrelated audio gives
   confidence ≈ 2 (99th percentile ≈ 4, measured on 4-60 s clips), whatever the clip's length; a correlation of
   0.5 over 20 s gives ≈ 7.
5. **Verdict**: a *clear peak* needs confidence ≥ `MIN_CONFIDENCE`, peak_corr ≥ `MIN_PEAK_CORR` (a floor for very
   long clips, where a weak correlation can still stand out) and the peak inside the search range (not at
   ±max_offset). ``pass`` = a clear peak with |offset| ≤ `PASS_MAX_OFFSET` frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

MAX_OFFSET = 15  # frames searched each way (±0.6 s at 25 fps)
PASS_MAX_OFFSET = 1  # |offset| in frames that still passes
MIN_PEAK_CORR = 0.2
MIN_CONFIDENCE = 5.0  # in σ₀ (noise of an unrelated pair)
NULL_MAX_LAG_S = 2.0  # autocorrelation lags summed for σ₀
PEAK_HALF_WIDTH = 2  # lags within this distance of the peak are not "the rest of the curve"
DETREND_S = 1.0
MIN_FRAMES = 50  # fewer frames with both a face and audio: no verdict is possible (2 s at 25 fps)

METRIC = "mouth-energy NCC (weight-free)"
NO_CLEAR_PEAK = "lips do not follow the audio"


@dataclass(frozen=True)
class SyncEstimate:
    """The AV sync of one video (or one segment of it).

    ``offset_frames`` (+ = audio late) and ``curve`` are None when no estimate was possible (see ``reason``).
    ``curve[i]`` is the correlation at lag ``i - max_offset``.
    """

    verdict: Literal["pass", "fail"]
    reason: str
    fps: float
    offset_frames: int | None = None
    peak_corr: float | None = None
    confidence: float | None = None
    frames_used: int = 0
    max_offset: int = MAX_OFFSET
    curve: tuple[float, ...] | None = field(default=None, repr=False)
    metric: str = METRIC

    @property
    def offset_ms(self) -> float | None:
        if self.offset_frames is None or not self.fps:
            return None
        return round(1000.0 * self.offset_frames / self.fps, 1)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self, curve: bool = False) -> dict:
        """The CLI/manifest record: offset_frames, offset_ms, confidence, peak_corr, verdict, reason, …"""
        out = {"offset_frames": self.offset_frames, "offset_ms": self.offset_ms,
               "confidence": _round(self.confidence), "peak_corr": _round(self.peak_corr),
               "verdict": self.verdict, "reason": self.reason, "metric": self.metric, "fps": _round(self.fps),
               "frames_used": self.frames_used, "max_offset": self.max_offset}
        if curve:
            out["curve"] = None if self.curve is None else [_round(c) for c in self.curve]
        return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def no_estimate(reason: str, fps: float = 0.0, frames_used: int = 0) -> SyncEstimate:
    """A failed estimate that has no numbers (no face, no audio, unreadable file, too short)."""
    return SyncEstimate(verdict="fail", reason=reason, fps=fps, frames_used=frames_used)


def detrend(series: np.ndarray, window: int) -> np.ndarray:
    """``series`` minus its centred moving mean over ``window`` frames; NaNs are ignored in the mean and kept."""
    x = np.asarray(series, dtype=np.float64)
    known = np.isfinite(x)
    if window <= 1 or not known.any():
        return x.copy()
    kernel = np.ones(window)
    total = np.convolve(np.where(known, x, 0.0), kernel, mode="same")
    count = np.convolve(known.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known, x - total / count, np.nan)


def correlation_curve(mouth: np.ndarray, envelope: np.ndarray, max_offset: int = MAX_OFFSET) -> tuple[np.ndarray, int]:
    """Pearson correlation of ``mouth[t]`` with ``envelope[t + L]`` for L in -max_offset..max_offset.

    Args:
        mouth: (n,) per-frame values, NaN where unknown.
        envelope: (m,) per-frame values, NaN where unknown.
    Returns:
        ((2·max_offset+1,) float64 curve, NaN where fewer than 3 pairs or a constant series; the fewest pairs any
        lag used).
    """
    a, b = np.asarray(mouth, np.float64), np.asarray(envelope, np.float64)
    curve = np.full(2 * max_offset + 1, np.nan)
    fewest = None
    for i, lag in enumerate(range(-max_offset, max_offset + 1)):
        start, stop = max(0, -lag), min(a.size, b.size - lag)  # t such that t and t + lag are both in range
        if stop - start < 3:
            fewest = 0
            continue
        x, y = a[start:stop], b[start + lag:stop + lag]
        both = np.isfinite(x) & np.isfinite(y)
        count = int(both.sum())
        fewest = count if fewest is None else min(fewest, count)
        if count < 3:
            continue
        x, y = x[both] - x[both].mean(), y[both] - y[both].mean()
        norm = math.sqrt(float(x @ x) * float(y @ y))
        if norm > 0:
            curve[i] = float(x @ y) / norm
    return curve, fewest or 0


def autocorrelation(series: np.ndarray, max_lag: int) -> np.ndarray:
    """(max_lag+1,) autocorrelation of ``series`` at lags 0..max_lag (NaNs count as the mean)."""
    x = np.asarray(series, np.float64)
    x = np.where(np.isfinite(x), x - np.nanmean(x), 0.0)
    energy = float(x @ x)
    if energy == 0:
        return np.eye(1, max_lag + 1)[0]
    return np.array([float(x[:x.size - k] @ x[k:]) / energy for k in range(max_lag + 1)])


def null_std(a: np.ndarray, b: np.ndarray, frames: int, max_lag: int) -> float:
    """Standard deviation of the correlation of two *unrelated* series with the autocorrelations of ``a`` and
    ``b`` over ``frames`` pairs (Bartlett): ``sqrt((1 + 2 Σₖ ρ_a(k) ρ_b(k)) / frames)``, k = 1..max_lag."""
    k = max(1, min(max_lag, frames // 4))
    ra, rb = autocorrelation(a, k), autocorrelation(b, k)
    return math.sqrt(max(1.0, 1.0 + 2.0 * float(ra[1:] @ rb[1:])) / max(frames, 1))


def estimate_offset(mouth: np.ndarray, envelope: np.ndarray, fps: float, max_offset: int = MAX_OFFSET) -> SyncEstimate:
    """The AV offset of a mouth-opening series against a speech-envelope series of the same frames.

    Args:
        mouth: (n,) mouth opening per video frame (`mouth.mouth_opening`), NaN without a face.
        envelope: (m,) speech envelope per video frame (`envelope.speech_envelope`), NaN past the audio.
        fps: the video frame rate (for milliseconds and the detrending window).
        max_offset: frames searched each way.
    Returns:
        `SyncEstimate`; see the module docstring for offset, peak_corr, confidence and the verdict.
    """
    if max_offset < PEAK_HALF_WIDTH + 2:
        raise ValueError(f"max_offset must be ≥ {PEAK_HALF_WIDTH + 2}, got {max_offset}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    mouth, envelope = np.asarray(mouth, np.float64), np.asarray(envelope, np.float64)
    n = min(mouth.size, envelope.size)
    both = int((np.isfinite(mouth[:n]) & np.isfinite(envelope[:n])).sum())
    if both < MIN_FRAMES:
        return no_estimate(f"too few frames with both a usable face and audio ({both} < {MIN_FRAMES})", fps, both)
    if not np.nanmax(envelope) > 1e-5:
        return no_estimate("the audio is silent: no speech to compare the lips with", fps, both)
    window = max(3, int(round(DETREND_S * fps)) | 1)
    a, b = detrend(mouth, window), detrend(envelope, window)
    if not np.nanstd(a) > 1e-6:  # inter-ocular units: landmark jitter alone is ~1e-3
        return no_estimate(f"{NO_CLEAR_PEAK}: the mouth does not move", fps, both)
    curve, used = correlation_curve(a, b, max_offset)
    if np.isnan(curve).all():
        return no_estimate("no correlation could be computed (constant series)", fps, both)
    peak_index = int(np.nanargmax(curve))
    lag = peak_index - max_offset
    peak = float(curve[peak_index])
    lags = np.arange(-max_offset, max_offset + 1)
    rest = curve[(np.abs(lags - lag) > PEAK_HALF_WIDTH) & np.isfinite(curve)]
    noise = null_std(a, b, used, max_lag=int(round(NULL_MAX_LAG_S * fps)))
    confidence = (peak - float(np.median(rest))) / noise if rest.size else 0.0
    verdict, reason = _verdict(lag, peak, confidence, fps, max_offset)
    return SyncEstimate(verdict=verdict, reason=reason, fps=fps, offset_frames=lag, peak_corr=peak,
                        confidence=confidence, frames_used=used, max_offset=max_offset, curve=tuple(curve.tolist()))


def _verdict(lag: int, peak: float, confidence: float, fps: float, max_offset: int) -> tuple[str, str]:
    numbers = f"peak correlation {peak:.2f} (≥ {MIN_PEAK_CORR}), confidence {confidence:.1f} (≥ {MIN_CONFIDENCE})"
    if peak < MIN_PEAK_CORR or confidence < MIN_CONFIDENCE:
        return "fail", f"{NO_CLEAR_PEAK}: no clear correlation peak within ±{max_offset} frames; {numbers}"
    ms = 1000.0 * abs(lag) / fps
    if abs(lag) == max_offset:
        side = "late" if lag > 0 else "early"
        return "fail", (f"the audio is at least {max_offset} frames ({ms:.0f} ms) {side}: the peak is at the edge "
                        f"of the ±{max_offset}-frame search")
    if abs(lag) <= PASS_MAX_OFFSET:
        return "pass", f"in sync: offset {lag:+d} frames ({lag * 1000.0 / fps:+.0f} ms), clear peak; {numbers}"
    side = "late" if lag > 0 else "early"
    return "fail", (f"the audio is {abs(lag)} frames ({ms:.0f} ms) {side} (|offset| > {PASS_MAX_OFFSET} frame); "
                    f"{numbers}")
