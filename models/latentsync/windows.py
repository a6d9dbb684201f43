"""Which frames of a segment LatentSync generates, in which 16-frame windows, and how overlapping windows blend.

Pure numpy, no model: the video engine (`video_engine.py`) asks these functions for the plan and the weights.

* `silence_alpha`: per frame, how much of the generated mouth to show (1 = all, 0 = the original mouth). Spans of
  dub silence of at least ``min_silence_s`` keep the original mouth, cross-faded over ``fade`` frames at each edge
  inside the span, so speech frames are always fully generated.
* `plan_windows`: windows of ``window`` frames over each run of frames to generate. ``overlap = 0`` gives the
  official windows (0..15, 16..31, ..., and a shorter last one). ``overlap > 0`` shares that many frames between
  consecutive windows and anchors the last window on the run's end (a full window whenever the run has
  ``window`` frames), so no window is short and the tail is never dropped.
* `blend_weights`: per window, per frame, a weight that ramps over the shared frames, so a frame covered by two
  windows is a cross-fade of both and a frame covered by one is exactly that window's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

SILENCE_DBFS = -50.0  # frame RMS below this (absolute, the dub is loudness-normalized) is silence
MIN_SILENCE_S = 0.5
FADE_FRAMES = 3


@dataclass(frozen=True)
class Window:
    """Frames [start, end) of a segment denoised together; ``run_start``/``run_end`` bound its run."""

    start: int
    end: int
    run_start: int
    run_end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def frame_rms_dbfs(wave: np.ndarray, n_frames: int, fps: Fraction, sample_rate: int = 16000) -> np.ndarray:
    """RMS level in dBFS of each video frame's span of a mono waveform ``(samples,)`` float in [-1, 1] -> ``(n,)``."""
    bounds = [int(i * sample_rate / fps) for i in range(n_frames + 1)]
    out = np.full(n_frames, -120.0)
    for i in range(n_frames):
        piece = wave[bounds[i]:bounds[i + 1]]
        if piece.size:
            out[i] = 10 * np.log10(float(np.mean(np.square(piece, dtype=np.float64))) + 1e-12)
    return out


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of True in a boolean ``(n,)`` array."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def silence_alpha(wave: np.ndarray, n_frames: int, fps: Fraction, *, min_silence_s: float = MIN_SILENCE_S,
                  fade: int = FADE_FRAMES, threshold_dbfs: float = SILENCE_DBFS) -> np.ndarray:
    """Per-frame weight ``(n,)`` float32 of the generated mouth: 0 inside long silences, ramps at their edges."""
    alpha = np.ones(n_frames, dtype=np.float32)
    silent = frame_rms_dbfs(wave, n_frames, fps) < threshold_dbfs
    min_frames = max(1, int(np.ceil(min_silence_s * float(fps))))
    for start, end in runs_of(silent):
        if end - start < min_frames:
            continue
        i = np.arange(start, end)
        fade_out = (i - start + 1) if start > 0 else np.full(i.size, fade + 1)  # frames since the speech before
        fade_in = (end - i) if end < n_frames else np.full(i.size, fade + 1)    # frames until the speech after
        alpha[start:end] = np.clip(1.0 - np.minimum(fade_out, fade_in) / (fade + 1), 0.0, 1.0)
    return alpha


def plan_windows(active: np.ndarray, window: int = 16, overlap: int = 0) -> list[Window]:
    """Windows over every run of True in ``active`` ``(n,)``; see the module docstring for the two layouts."""
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in 0..{window - 1}, got {overlap}")
    windows: list[Window] = []
    for a, b in runs_of(active):
        if overlap == 0 or b - a <= window:
            windows += [Window(s, min(s + window, b), a, b) for s in range(a, b, window)]
            continue
        stride = window - overlap
        start = a
        while start + window < b:
            windows.append(Window(start, start + window, a, b))
            start += stride
        windows.append(Window(b - window, b, a, b))
    return windows


def blend_weights(windows: list[Window]) -> list[np.ndarray]:
    """Per window, weights ``(length,)`` float32 that sum to 1 over the windows covering each frame."""
    if not windows:
        return []
    n = max(w.end for w in windows)
    raw = []
    for k, w in enumerate(windows):
        weights = np.ones(w.length, dtype=np.float32)
        prev = windows[k - 1] if k > 0 and windows[k - 1].run_start == w.run_start else None
        nxt = windows[k + 1] if k + 1 < len(windows) and windows[k + 1].run_start == w.run_start else None
        if prev is not None and prev.end > w.start:  # ramp up over the frames shared with the previous window
            shared = prev.end - w.start
            weights[:shared] *= (np.arange(shared, dtype=np.float32) + 1) / (shared + 1)
        if nxt is not None and w.end > nxt.start:  # ramp down over the frames shared with the next window
            shared = w.end - nxt.start
            weights[w.length - shared:] *= (shared - np.arange(shared, dtype=np.float32)) / (shared + 1)
        raw.append(weights)
    total = np.zeros(n, dtype=np.float32)
    for w, weights in zip(windows, raw):
        total[w.start:w.end] += weights
    return [weights / total[w.start:w.end] for w, weights in zip(windows, raw)]


def window_groups(windows: list[Window], size: int, window: int = 16) -> list[list[int]]:
    """Consecutive windows in groups of at most ``size`` for one model call; a short window ends its group
    (the sampling loop splits a call's frames into windows of 16, so only a call's last window may be short)."""
    groups: list[list[int]] = []
    for k, w in enumerate(windows):
        if groups and len(groups[-1]) < size and windows[groups[-1][-1]].length == window:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


__all__ = ["Window", "blend_weights", "frame_rms_dbfs", "plan_windows", "runs_of", "silence_alpha", "window_groups"]
