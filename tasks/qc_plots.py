"""The QC report's images: the before/after contact sheet of mouth crops and the momentary-loudness plot.

Pure functions (no Prefect). Frames are decoded with PyAV (seek by time), drawn and written with OpenCV; the
loudness plot is matplotlib (Agg). Momentary loudness reuses the project's streamed BS.1770 meter
(`lipline.tasks.audio_stream.LoudnessMeter`: pyloudnorm's K-weighting filters, 100 ms sub-blocks), so the file is
read in chunks and never held whole in memory.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lipline.tasks.audio_stream import CHANNEL_WEIGHTS, LoudnessMeter, iter_audio
from lipline.uris import file_identity

# MediaPipe FaceMesh lip contour (outer + inner), FACEMESH_LIPS
LIP_LANDMARKS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
                 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)
TILE = 144  # px, square tiles
LABEL_W = 72  # left column with "before" / "after"
HEADER_H = 22  # top strip with the time of each column
MOMENTARY_S, HOP_S = 0.4, 0.1
NO_FACE_CAPTION = "no face track: centre of the lower third of the frame"


# ------------------------------------------------------------------------------------------------ frames


def keyframe_times(path: Path) -> list[float]:
    """Display times in seconds of the keyframes of the first video stream of `path`, sorted (one demux pass, no
    decoding; remembered while the file keeps its size and modification time: the job's sheet times and the
    contact sheet both ask for the original's, a pass over ~1 GB for a 10-min source)."""
    return list(_keyframe_times(*file_identity(path)))


@functools.lru_cache(maxsize=8)
def _keyframe_times(path: str, size: int, mtime_ns: int) -> tuple[float, ...]:
    import av

    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        return tuple(sorted(float(p.pts * tb) for p in container.demux(stream) if p.is_keyframe and p.pts is not None))


def sheet_times(duration_s: float, frames: int, rate: float, keyframes: Sequence[float] = ()) -> list[float]:
    """The contact sheet's times in the main part: the centres of `frames` equal slices of `duration_s`, each moved
    onto a frame boundary of `rate` and, when one of `keyframes` (the original's) lies within a quarter of a slice,
    onto that keyframe — a frame the report then decodes without the frames before it. Sorted and distinct; the
    final encode puts a keyframe at each (`tasks/post.py`), so the deliverable's side costs one frame each too."""
    if frames < 1:
        raise ValueError(f"frames must be ≥ 1, got {frames}")
    if duration_s <= 0 or rate <= 0:
        return []
    slice_s, last = duration_s / frames, (math.ceil(duration_s * rate) - 1) / rate
    times: list[float] = []
    for k in range(frames):
        centre = (k + 0.5) * slice_s
        near = [key for key in keyframes if abs(key - centre) <= slice_s / 4 and key <= last]
        t = min(near, key=lambda key: abs(key - centre)) if near else centre
        t = min(round(t * rate) / rate, last)
        if not times or t > times[-1]:
            times.append(t)
    return times


def _as_shown(frame) -> np.ndarray:
    """BGR, turned as a player shows it (the frame's display matrix: a portrait phone clip stands upright)."""
    from lipline.models.face.video import ccw_quarters

    bgr = frame.to_ndarray(format="bgr24")
    k = ccw_quarters(frame)
    return np.ascontiguousarray(np.rot90(bgr, k=k)) if k else bgr


def frames_at(path: Path, times: Sequence[float]) -> list[np.ndarray | None]:
    """BGR frames of `path` shown at each time in seconds (the first frame whose display interval reaches it),
    upright; None past the end of the stream.

    Decodes as little as it can: the keyframe times come from one demux pass (no decoding); for each time (in
    increasing order) decoding goes on from where it is unless a keyframe lies between there and the time, in which
    case it seeks to that keyframe. A 4K clip with one keyframe is decoded once, not once per time.
    """
    import av

    order = sorted(range(len(times)), key=lambda i: times[i])
    out: list[np.ndarray | None] = [None] * len(times)
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        tb = stream.time_base
        keys = keyframe_times(path)
        stream.thread_type = "AUTO"  # frame + slice threads
        decoded = None  # the decoder, positioned after `shown`
        shown = None    # the last frame it returned
        for i in order:
            t = times[i]
            k = bisect.bisect_right(keys, t + 0.5 / rate) - 1
            key = keys[k] if k >= 0 else 0.0
            if decoded is None or shown is None or shown.time is None or key > shown.time + 0.5 / rate:
                container.seek(int(key / tb), stream=stream, backward=True)
                decoded, shown = container.decode(stream), None
            if shown is not None and shown.time is not None and shown.time + 0.5 / rate > t:
                out[i] = _as_shown(shown)  # two times in one frame's interval
                continue
            for frame in decoded:
                shown = frame
                if frame.time is not None and frame.time + 0.5 / rate > t:
                    out[i] = _as_shown(frame)
                    break
            else:
                decoded = None  # the end: every later time is past it too
    return out


def mouth_box(landmarks: np.ndarray, pad: float = 0.6) -> tuple[float, float, float] | None:
    """Centre x, centre y and side of a square around the lip landmarks of one (478, 2) mesh, padded by `pad`
    of the lip width on each side; None when the lips are not all finite."""
    lips = landmarks[list(LIP_LANDMARKS)]
    if not np.isfinite(lips).all():
        return None
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * pad)
    return float(x0 + x1) / 2, float(y0 + y1) / 2, float(max(side, 8.0))


def track_box(track, t: float) -> tuple[float, float, float] | None:
    """The mouth square of the face track's frame nearest to `t` that has a valid face (None: no valid frame)."""
    valid = np.flatnonzero(np.asarray(track.valid, bool))
    if valid.size == 0:
        return None
    index = int(valid[np.argmin(np.abs(valid - round(t * track.fps)))])
    return mouth_box(np.asarray(track.landmarks[index], np.float64))


def fallback_box(width: int, height: int) -> tuple[float, float, float]:
    """The centre of the lower third of a `width` x `height` frame (normalized-video pixels)."""
    side = min(width / 3, height / 3)
    return width / 2, height * 5 / 6, side


def crop_tile(frame: np.ndarray | None, box: tuple[float, float, float], scale: tuple[float, float]) -> np.ndarray:
    """The square `box` (normalized-video pixels, scaled by `scale` = frame size / normalized size) cut from
    `frame`, shifted inside it, resized to TILE x TILE; a grey tile when there is no frame."""
    import cv2

    if frame is None:
        return np.full((TILE, TILE, 3), 64, np.uint8)
    h, w = frame.shape[:2]
    cx, cy, side = box[0] * scale[0], box[1] * scale[1], box[2] * max(scale)
    side = int(min(max(side, 2), w, h))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return cv2.resize(frame[y0:y0 + side, x0:x0 + side], (TILE, TILE), interpolation=cv2.INTER_AREA)


def _label(image: np.ndarray, text: str, x: int, y: int) -> None:
    import cv2

    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)


def contact_sheet(original: Path, deliverable: Path, out: Path, *, main_offset_s: float, main_duration_s: float,
                  size: tuple[int, int], track=None, frames: int = 8, times: Sequence[float] | None = None) -> str:
    """Write the contact sheet PNG to `out` and return its caption.

    Layout: a HEADER_H strip with each column's time in the main part, then the "before" row (mouth crops of
    `original` at those times) and the "after" row (the same crops of `deliverable` at ``main_offset_s`` later),
    each TILE px high, after a LABEL_W column of labels. Times are the centres of `frames` equal slices of
    ``main_duration_s`` unless `times` (main-part seconds, e.g. `sheet_times`) gives them. `size` is the (width,
    height) the face track's pixels refer to (the normalized video).
    """
    import cv2

    if frames < 1:
        raise ValueError(f"frames must be ≥ 1, got {frames}")
    times = list(times) if times else [(k + 0.5) * main_duration_s / frames for k in range(frames)]
    frames = len(times)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="lipline-contact-sheet") as pool:  # decoders free the GIL
        after_job = pool.submit(frames_at, deliverable, [main_offset_s + t for t in times])
        before = frames_at(original, times)
        after = after_job.result()
    boxes = [track_box(track, t) if track is not None else None for t in times]
    caption = ("mouth region from the face track (lip landmarks, padded)" if track is not None and any(boxes)
               else NO_FACE_CAPTION)
    sheet = np.full((HEADER_H + 2 * TILE, LABEL_W + frames * TILE, 3), 32, np.uint8)
    for k, t in enumerate(times):
        box = boxes[k] or fallback_box(*size)
        x = LABEL_W + k * TILE
        for row, frame in enumerate((before[k], after[k])):
            scale = (1.0, 1.0) if frame is None else (frame.shape[1] / size[0], frame.shape[0] / size[1])
            sheet[HEADER_H + row * TILE:HEADER_H + (row + 1) * TILE, x:x + TILE] = crop_tile(frame, box, scale)
        _label(sheet, f"{t:.2f} s", x + 4, HEADER_H - 6)
    _label(sheet, "before", 6, HEADER_H + TILE // 2)
    _label(sheet, "after", 6, HEADER_H + TILE + TILE // 2)
    if not cv2.imwrite(str(out), sheet):
        raise OSError(f"could not write {out}")
    return caption


# ------------------------------------------------------------------------------------------------ loudness


def momentary_loudness(path: Path, chunk_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """BS.1770 momentary loudness of the first audio stream of `path`: 400 ms K-weighted windows every 100 ms.

    Returns ``(t, lufs)``: `t` the end of each window in seconds, `lufs` its loudness (``-inf`` for digital
    silence). Streamed: only the per-100-ms sums of squares are kept.
    """
    meter: LoudnessMeter | None = None
    for chunk, rate in iter_audio(path, chunk_s=chunk_s):
        meter = meter or LoudnessMeter(rate, chunk.shape[1])
        meter.add(chunk)
    if meter is None or len(meter.sub_sums) < 4:
        return np.zeros(0), np.zeros(0)
    subs = np.array(meter.sub_sums)
    windows = np.lib.stride_tricks.sliding_window_view(subs, 4, axis=0).sum(axis=-1)  # (n - 3, channels)
    z = windows / (MOMENTARY_S * meter.sr)
    weights = np.array(CHANNEL_WEIGHTS[: meter.channels])
    with np.errstate(divide="ignore"):
        lufs = -0.691 + 10.0 * np.log10(z @ weights)
    t = MOMENTARY_S + HOP_S * np.arange(len(lufs))
    return t, lufs


def loudness_plot(dub: Path, delivered: Path, out: Path, *, target_lufs: float | None,
                  delivered_offset_s: float = 0.0, floor_lufs: float = -60.0) -> dict:
    """Plot the momentary loudness of the original `dub` and of the `delivered` audio (its time axis shifted by
    ``-delivered_offset_s``, e.g. the intro) with the target line; write the PNG to `out`.

    Returns the median momentary loudness of each (windows above `floor_lufs`), for the report's text.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    medians = {}
    for label, path, shift, colour in (("original dub", dub, 0.0, "tab:blue"),
                                       ("delivered", delivered, delivered_offset_s, "tab:orange")):
        t, lufs = momentary_loudness(path)
        shown = np.where(lufs > floor_lufs, lufs, np.nan)
        ax.plot(t - shift, shown, label=label, color=colour, linewidth=1.0)
        loud = lufs[lufs > floor_lufs]
        medians[label] = float(np.median(loud)) if loud.size else None
    if delivered_offset_s > 0:
        ax.axvspan(-delivered_offset_s, 0.0, color="0.85", zorder=0, label="intro (delivered only)")
    if target_lufs is not None:
        ax.axhline(target_lufs, color="tab:red", linestyle="--", linewidth=1.0, label=f"target {target_lufs:g} LUFS")
    ax.set_xlabel("time in the main part (s)")
    ax.set_ylabel("momentary loudness (LUFS)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(out), format="png")
    return medians


__all__ = ["LIP_LANDMARKS", "HEADER_H", "LABEL_W", "TILE", "NO_FACE_CAPTION", "contact_sheet", "crop_tile",
           "fallback_box", "frames_at", "keyframe_times", "loudness_plot", "momentary_loudness", "mouth_box",
           "sheet_times", "track_box"]
