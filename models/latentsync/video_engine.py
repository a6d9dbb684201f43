"""`latentsync` as a video engine: a segment's video + 16 kHz audio -> the lip-synced segment video.

Per segment: face track slice -> official alignment (`lipline.models.face.align`) -> `LatentSyncEngine` window
group by window group -> paste-back into the source-resolution frames -> a lossless H.264 segment (``qp 0``) at the
source's exact frame rate, same frame count and size. The one lossy encode of the job stays the final one.

* **Streaming**: frames are decoded once, in order; a frame is held only until every window covering it has been
  generated (at most a window group plus the overlap, e.g. 16-80 frames), then pasted, encoded and dropped, so
  memory does not grow with the segment's length.
* **Untouched frames**: frames without a usable face (the track's gap spans) and frames deep in a dub silence
  (`keep_mouth_in_silence`) are the decoded source frames, re-encoded losslessly: bit-exact before the final encode.
  A generated frame changes only the pixels inside the face's paste region (converted YUV -> RGB -> YUV there).
* **Source frame rate**: audio chunks are taken at each source frame's timestamp (``centre = int(i * 50 / fps)``
  with the exact rational rate), so 24/30/50/60 fps sources are lip-synced at their own rate; at 25 fps this is the
  official chunking.
* **RNG**: one generator per segment, seeded with ``seed``; the initial noise is drawn once and shared by all
  windows, and window groups draw in order, so ``window_overlap = 0`` reproduces the official sampling of the whole
  segment exactly.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import cv2
import numpy as np
import torch

from lipline.errors import EngineError, MediaToolError
from lipline.frames import FrameReader, LosslessWriter, video_facts
from lipline.models.face.align import AffineSmoother, CropGeometry, align_face, face_region, paste_back
from lipline.models.face.facetrack import REASONS as FACE_REASONS
from lipline.records import EngineResult, FrameSpan, LipsyncOptions, Segment

from .engine import EngineParams, LatentSyncEngine
from .windows import Window, blend_weights, plan_windows, runs_of, silence_alpha, window_groups

WINDOW = 16


@dataclass
class SegmentPlan:
    """What the engine will do to each frame of one segment (all arrays ``(n,)`` or ``(n, ...)``)."""

    n: int
    valid: np.ndarray        # usable face
    alpha: np.ndarray        # weight of the generated mouth (0 = original)
    matrices: np.ndarray     # (n, 2, 3) float32 image -> crop, NaN where not valid
    windows: list[Window]
    weights: list[np.ndarray]
    reasons: list[str]       # per frame: generated | no face | too small | too turned | silence

    @property
    def active(self) -> np.ndarray:
        return self.valid & (self.alpha > 0)


def smoothed_matrices(anchors: np.ndarray, valid: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Official image->crop matrices ``(n, 2, 3)`` with temporal smoothing; the smoother restarts after a gap."""
    out = np.full((len(valid), 2, 3), np.nan, dtype=np.float32)
    for start, end in runs_of(valid):
        smoother = AffineSmoother(geometry)
        for i in range(start, end):
            out[i] = smoother.estimate(anchors[i])
    return out


def plan_segment(track: Any, alpha: np.ndarray, geometry: CropGeometry, overlap: int) -> SegmentPlan:
    """Combine a face track slice (``valid``, ``anchors``, ``reason``) and the silence weights into a plan."""
    valid = np.asarray(track.valid, dtype=bool)
    matrices = smoothed_matrices(np.asarray(track.anchors, dtype=np.float64), valid, geometry)
    active = valid & (alpha > 0)
    windows = plan_windows(active, WINDOW, overlap)
    reasons = ["generated" if a else ("silence" if v else FACE_REASONS[int(r)] if int(r) else "no face")
               for a, v, r in zip(active, valid, np.asarray(track.reason))]
    return SegmentPlan(len(valid), valid, alpha, matrices, windows, blend_weights(windows), reasons)


def spans(reasons: list[str]) -> tuple[list[FrameSpan], list[FrameSpan]]:
    """(generated spans, passed-through spans with their reason) from per-frame reasons."""
    generated: list[FrameSpan] = []
    passed: list[FrameSpan] = []
    start = 0
    for i in range(1, len(reasons) + 1):
        if i == len(reasons) or reasons[i] != reasons[start]:
            span = FrameSpan(start=start, end=i, reason=reasons[start])
            (generated if reasons[start] == "generated" else passed).append(span)
            start = i
    return generated, passed


def paste_into_yuv(frame: av.VideoFrame, face: np.ndarray, matrix: np.ndarray, geometry: CropGeometry) -> av.VideoFrame:
    """A new yuv420p frame: ``face`` (3, R, R) float in [-1, 1] pasted back; only its paste region is converted."""
    yuv = _yuv420p(frame)
    h, w = frame.height, frame.width
    x0, y0, x1, y1 = face_region(matrix, geometry, w, h)
    # Chroma is subsampled 2x2 and OpenCV's I420 layout packs a region's chroma rows in pairs: x on even, y on
    # multiple-of-4 bounds (sizes are even: normalize makes them so).
    x0, y0 = (x0 // 4) * 4, (y0 // 4) * 4
    x1, y1 = min(w, -(-x1 // 4) * 4), min(h, -(-y1 // 4) * 4)
    if (y1 - y0) % 4:
        y0, y1 = (y0 - 2, y1) if y0 >= 2 else (y0, y1 - 2)
    if x1 - x0 < 4 or y1 - y0 < 4 or w % 2 or h % 2:
        return frame  # the face lies outside the picture (or the frame has odd sizes): nothing to paste
    cw = w // 2
    y_plane = yuv[:h]
    u_plane = yuv[h:h + h // 4].reshape(h // 2, cw)
    v_plane = yuv[h + h // 4:].reshape(h // 2, cw)
    rw, rh = x1 - x0, y1 - y0
    roi = np.concatenate([y_plane[y0:y1, x0:x1],
                          u_plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2].reshape(rh // 4, rw),
                          v_plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2].reshape(rh // 4, rw)])
    rgb = cv2.cvtColor(np.ascontiguousarray(roi), cv2.COLOR_YUV2RGB_I420)
    shifted = matrix.astype(np.float64).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], dtype=np.float64)  # frame coords -> region coords
    pasted = paste_back(rgb, face, shifted.astype(np.float32), geometry)
    back = cv2.cvtColor(pasted, cv2.COLOR_RGB2YUV_I420)
    y_plane[y0:y1, x0:x1] = back[:rh]
    u_plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = back[rh:rh + rh // 4].reshape(rh // 2, rw // 2)
    v_plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = back[rh + rh // 4:].reshape(rh // 2, rw // 2)
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def frame_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a frame, with the same conversion as the paste-back (BT.601, OpenCV)."""
    return cv2.cvtColor(_yuv420p(frame), cv2.COLOR_YUV2RGB_I420)


def _yuv420p(frame: av.VideoFrame) -> np.ndarray:
    """The frame's I420 planes as one (H * 3 / 2, W) uint8 array (converted when it is not yuv420p)."""
    return (frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")).to_ndarray(format="yuv420p")


@dataclass
class _Stream:
    """Frames in flight: decoded frames, their aligned faces and the blended generated faces (float)."""

    frames: dict[int, av.VideoFrame] = field(default_factory=dict)
    faces: dict[int, np.ndarray] = field(default_factory=dict)       # uint8 (3, R, R)
    generated: dict[int, np.ndarray] = field(default_factory=dict)   # float32 (3, R, R), weighted sum


class LatentSyncVideoEngine:
    """The `latentsync` video engine of the registry (one instance per worker process keeps models loaded)."""

    name = "latentsync"
    kind = "video"
    version = "1"
    dry_run = False

    def __init__(self, device: str | torch.device | None = None, window_group: int | None = None) -> None:
        self.device = device
        self.window_group = window_group
        self._engines: dict[tuple[str, str | None], LatentSyncEngine] = {}
        self._identities: dict[tuple[str, str | None], dict] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ model
    def face_engine(self, options: LipsyncOptions) -> LatentSyncEngine:
        """The face engine of ``options.model_version`` from ``options.weights_dir`` (built once, kept warm)."""
        key = (options.model_version, options.weights_dir)
        with self._lock:
            if key not in self._engines:
                self._engines[key] = LatentSyncEngine(options.model_version, options.weights_dir, device=self.device)
            return self._engines[key]

    @staticmethod
    def check_weights(options: LipsyncOptions) -> dict:
        """Resolve the weights without loading them (cheap); raises `WeightsNotFound` naming the pull command."""
        from .smoke import smoke_marker
        from .weights import resolve

        rw = resolve(options.model_version, options.weights_dir)
        return {"version": rw.version, "cache_dir": str(rw.cache_dir), "smoke_model": smoke_marker(rw.unet_path) is not None}

    def identity(self, options: LipsyncOptions) -> dict:
        """Engine, version, model release and the SHA-256 of every checkpoint and the mask (part of the segment
        result key; hashed once per weights folder and process, without loading the model)."""
        from .weights import resolve

        key = (options.model_version, options.weights_dir)
        with self._lock:
            if key not in self._identities:
                rw = resolve(options.model_version, options.weights_dir)
                self._identities[key] = {"engine": self.name, "version": self.version, "model": rw.version,
                                         "checkpoints": dict(rw.sha256), "mask": rw.mask_provenance()}
            return self._identities[key]

    # ------------------------------------------------------------------ segment
    def run_segment(self, segment: Segment, video: Path, audio: Path, out: Path, options: LipsyncOptions, *,
                    track: Any = None, progress: Callable[[float], None] | None = None) -> EngineResult:
        """Lip-sync one segment into ``out`` (MP4, lossless H.264); returns what was done, frame by frame."""
        from .audio import load_audio_16k

        started = time.perf_counter()
        engine = self.face_engine(options)
        params = EngineParams(steps=options.steps, guidance=options.guidance, seed=options.seed,
                              dtype=options.precision, scheduler=options.sampler)
        model = engine.load(None if options.precision == "auto" else options.precision)
        geometry = CropGeometry(model.resolution)
        first, last = segment.frame_range if segment.frame_range else (0, None)
        file_frames, rate, width, height = video_facts(video, count_frames=last is None)
        n = (last if last is not None else file_frames) - first
        if track is None:
            track = _track_of(video, options.face, first, n)
        if track.frame_count != n:
            raise EngineError(f"segment {segment.index}: the face track has {track.frame_count} frames, the segment {n}")

        wave = load_audio_16k(audio)
        t0 = time.perf_counter()
        chunks = _chunks_for_frames(model.audio_chunks(wave, fps=_chunk_rate(rate)), n)
        audio_s = time.perf_counter() - t0
        alpha = silence_alpha(wave, n, rate) if options.keep_mouth_in_silence else np.ones(n, np.float32)
        plan = plan_segment(track, alpha, geometry, options.window_overlap)
        mask = model.mask[0].cpu().numpy() < 0.5  # (R, R) region the model regenerates

        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".part.mp4")
        writer = LosslessWriter(partial, rate, width, height)
        reader = FrameReader(video, rate, first + n)
        state = _Stream()
        generator = torch.Generator(device=engine.device).manual_seed(options.seed)
        init_noise = None
        rungs: list[str] = []
        timings = {"audio_s": round(audio_s, 3), "align_s": 0.0, "model_s": 0.0, "paste_encode_s": 0.0}
        seams = _SeamMeter(mask, plan.windows)
        groups = window_groups(plan.windows, self.window_group or 4, WINDOW)
        next_group = 0
        emitted = 0
        try:
            for i, frame in enumerate(reader.frames(first, first + n)):
                state.frames[i] = frame
                if plan.active[i]:
                    t = time.perf_counter()
                    state.faces[i] = align_face(frame_rgb(frame), plan.matrices[i], geometry)
                    timings["align_s"] += time.perf_counter() - t
                while next_group < len(groups) and plan.windows[groups[next_group][-1]].end <= i + 1:
                    t = time.perf_counter()
                    init_noise = self._generate(engine, params, plan, groups[next_group], state, chunks, generator,
                                                init_noise, rungs)
                    timings["model_s"] += time.perf_counter() - t
                    next_group += 1
                pending = plan.windows[groups[next_group][0]].start if next_group < len(groups) else i + 1
                t = time.perf_counter()
                while emitted < min(pending, i + 1):
                    self._emit(emitted, plan, state, geometry, writer, seams)
                    emitted += 1
                timings["paste_encode_s"] += time.perf_counter() - t
                if progress is not None:
                    progress(emitted / n)
            if writer.count != n:
                raise MediaToolError(f"segment {segment.index}: wrote {writer.count} frames, expected {n}")
        finally:
            reader.close()
            writer.close()
        os.replace(partial, out)

        generated, passed = spans(plan.reasons)
        settings = {
            **{k: getattr(options, k) for k in ("model_version", "steps", "sampler", "guidance", "seed", "precision", "face",
                                                "keep_mouth_in_silence", "window_overlap")},
            "resolution": model.resolution, "device": str(engine.device), "fps": f"{rate.numerator}/{rate.denominator}",
            "checkpoints": model.provenance.get("sha256", {}), "repos": model.provenance.get("repos", {}),
            "mask": model.provenance.get("mask"), "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "seams": seams.summary(),
        }
        return EngineResult(segment_index=segment.index, uri=str(out), engine=self.name, engine_version=self.version,
                            dry_run=False, smoke_model=bool(model.provenance.get("smoke_model")), rungs=rungs,
                            seconds=round(time.perf_counter() - started, 3), frames=n, generated=generated,
                            passed_through=passed, settings=settings)

    @staticmethod
    def _generate(engine: LatentSyncEngine, params: EngineParams, plan: SegmentPlan, group: list[int],
                  state: _Stream, chunks: torch.Tensor, generator: torch.Generator, init_noise: Any,
                  rungs: list[str]) -> Any:
        windows = [plan.windows[k] for k in group]
        frames = [i for w in windows for i in range(w.start, w.end)]
        faces = torch.from_numpy(np.stack([state.faces[i] for i in frames]))
        result = engine.generate(faces, chunks[frames], params=params, generator=generator, init_noise=init_noise,
                                 return_float=True)
        rungs.extend(r for r in result.rungs_taken if r not in rungs)
        out = result.faces_float.numpy()
        pos = 0
        for k, w in zip(group, windows):
            for j, i in enumerate(range(w.start, w.end)):
                contribution = out[pos + j] * plan.weights[k][j]
                state.generated[i] = state.generated.get(i, 0) + contribution
            pos += w.length
        return result.init_noise

    @staticmethod
    def _emit(i: int, plan: SegmentPlan, state: _Stream, geometry: CropGeometry, writer: LosslessWriter,
              seams: "_SeamMeter") -> None:
        frame = state.frames.pop(i)
        face = state.faces.pop(i, None)
        generated = state.generated.pop(i, None)
        if generated is None or face is None:
            writer.write(frame)  # no usable face, or silence: the source frame
            seams.skip()
            return
        a = float(plan.alpha[i])
        if a < 1.0:  # fade towards the original mouth at the edges of a silence
            original = face.astype(np.float32) / 127.5 - 1.0
            generated = a * generated + (1.0 - a) * original
        seams.add(i, generated)
        writer.write(paste_into_yuv(frame, generated, plan.matrices[i], geometry))


class _SeamMeter:
    """Mean absolute difference (0-255 scale) of the regenerated mouth between consecutive generated frames,
    split into pairs that straddle a window boundary and pairs inside a window: a seam shows as a larger jump."""

    def __init__(self, mask: np.ndarray, windows: list[Window]) -> None:
        self.mask = mask
        self.boundaries = {w.start for k, w in enumerate(windows) if k and w.run_start == windows[k - 1].run_start}
        self.prev: tuple[int, np.ndarray] | None = None
        self.boundary: list[float] = []
        self.within: list[float] = []

    def add(self, i: int, face: np.ndarray) -> None:
        mouth = face[:, self.mask]
        if self.prev is not None and self.prev[0] == i - 1:
            mad = float(np.mean(np.abs(mouth - self.prev[1]))) * 127.5
            (self.boundary if i in self.boundaries else self.within).append(mad)
        self.prev = (i, mouth)

    def skip(self) -> None:
        self.prev = None

    def summary(self) -> dict:
        def mean(xs: list[float]) -> float | None:
            return round(float(np.mean(xs)), 3) if xs else None

        return {"mouth_mad_at_window_boundaries": mean(self.boundary), "mouth_mad_within_windows": mean(self.within),
                "boundary_pairs": len(self.boundary), "within_pairs": len(self.within)}


def _chunk_rate(rate: Fraction) -> float | Fraction:
    """Integer rates as float (bit-for-bit the official chunking at 25), others as the exact fraction."""
    return float(rate) if rate.denominator == 1 else rate


def _chunks_for_frames(chunks: torch.Tensor, n: int) -> torch.Tensor:
    """Exactly ``n`` chunks: the official count is a frame or two longer than the audio; repeat the last if short."""
    if chunks.shape[0] >= n:
        return chunks[:n]
    return torch.cat([chunks, chunks[-1:].expand(n - chunks.shape[0], *chunks.shape[1:])])


def _track_of(video: Path, face: str, first: int, n: int) -> Any:
    """The face track of frames [first, first + n) when the caller has none (notebooks): tracks the file."""
    from lipline.models.face.track import compute_face_track

    track = compute_face_track(video, face)
    if first == 0 and track.frame_count == n:
        return track
    from lipline.models.face.slicing import take

    return take(track, list(range(first, first + n)))


__all__ = ["LatentSyncVideoEngine", "SegmentPlan", "paste_into_yuv", "plan_segment", "smoothed_matrices", "spans"]
