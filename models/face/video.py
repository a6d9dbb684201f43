"""Stream a video's frames upright (display-matrix rotation applied), one at a time.

PyAV reports a frame's display matrix as ``frame.rotation`` in degrees counter-clockwise (what a player turns
the stored picture by); ``np.rot90(k=ccw // 90)`` applies it.

`iter_frames` yields full RGB arrays (debug view, sampling). `iter_upright` is the fast path of the face track:
it decodes in a background thread (a few frames ahead) and yields `UprightFrame`s that convert to RGB only what
the detector and the landmarker look at — a shrunk frame, a 256-px face region — straight from the YUV planes,
which at 1080p costs a fraction of a full RGB conversion.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

from lipline.errors import InputError


@dataclass(frozen=True)
class VideoHeader:
    """What the face track needs from a video: the upright size, the nominal rate and the estimated length."""

    width: int  # upright (after rotation)
    height: int
    fps: float
    frame_count_estimate: int  # from the header; the decoded count is authoritative
    rotation_ccw: int  # 0, 90, 180 or 270


def ccw_quarters(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise a player gives `frame` (its display matrix): ``np.rot90(a, k=...)``."""
    try:
        ccw = float(frame.rotation or 0.0)
    except Exception:  # noqa: BLE001 - no display matrix / old PyAV
        return 0
    return int(round(ccw / 90.0)) % 4


def _open(path: str | Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(str(path), "video", f"cannot be opened ({exc})",
                         "Check the path and that the file is a complete video.") from None
    if not container.streams.video:
        container.close()
        raise InputError(str(path), "video", "has no video stream", "Pass a video file (e.g. MP4/MOV/MKV).")
    return container


def read_header(path: str | Path) -> VideoHeader:
    """Decode the first frame to learn the upright size and rotation."""
    for header, _ in iter_frames(path):
        return header
    raise InputError(str(path), "video", "has no decodable frame", "Re-export the video.")


def _decode(path: str | Path) -> Iterator[tuple[VideoHeader, av.VideoFrame]]:
    """Decoded frames with the header learnt from the first one. Raises `InputError` when the file cannot be
    read at all; a file that breaks mid-way ends the iteration at the last good frame."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        estimate = int(stream.frames or 0)
        if not estimate and container.duration:
            estimate = int(round(container.duration / av.time_base * fps))
        header: VideoHeader | None = None
        try:
            for frame in container.decode(stream):
                if header is None:
                    k = ccw_quarters(frame)
                    w, h = (frame.height, frame.width) if k % 2 else (frame.width, frame.height)
                    header = VideoHeader(w, h, fps, estimate, 90 * k)
                yield header, frame
        except (av.FFmpegError, EOFError) as exc:
            if header is None:
                raise InputError(str(path), "video", f"cannot be decoded ({exc})",
                                 "Re-export the video (H.264/H.265 in MP4 or MOV).") from None
    finally:
        container.close()


def iter_frames(path: str | Path, *, keep: "Callable[[int], bool] | None" = None
                ) -> Iterator[tuple[VideoHeader, np.ndarray | None]]:
    """Yield ``(header, rgb)`` per decoded frame; ``rgb`` is (H, W, 3) uint8 upright, C-contiguous.

    ``keep(index) -> bool`` skips the RGB conversion of frames it rejects (they yield ``None``), so sampling
    a few frames per second costs a decode, not a conversion. Raises `InputError` when the file cannot be read.
    """
    for index, (header, frame) in enumerate(_decode(path)):
        rgb = None
        if keep is None or keep(index):
            rgb = frame.to_ndarray(format="rgb24")
            if header.rotation_ccw:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=header.rotation_ccw // 90))
        yield header, rgb


# --- fast path: lazy upright frames ----------------------------------------------------------------------------

def _rotation_affine(k: int, width: int, height: int) -> np.ndarray:
    """(3, 3) affine taking stored pixel coordinates to upright ones for ``np.rot90(k)`` of a width×height
    picture."""
    m = np.eye(3)
    w, h = width, height
    for _ in range(k % 4):  # one quarter turn counter-clockwise: (x, y) -> (y, w - 1 - x)
        m = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w - 1.0], [0.0, 0.0, 1.0]]) @ m
        w, h = h, w
    return m


_Y_LIMITED = np.clip((np.arange(256) - 16) * (255 / 219), 0, 255).round().astype(np.uint8)
_C_LIMITED = np.clip((np.arange(256) - 128) * (255 / 224) + 128, 0, 255).round().astype(np.uint8)


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, limited: bool) -> np.ndarray:
    """Same-size Y, U, V (uint8, BT.601) → (h, w, 3) uint8 RGB."""
    if limited:
        y, u, v = cv2.LUT(y, _Y_LIMITED), cv2.LUT(u, _C_LIMITED), cv2.LUT(v, _C_LIMITED)
    return cv2.cvtColor(cv2.merge([y, u, v]), cv2.COLOR_YUV2RGB)


class ArrayFrame:
    """An (H, W, 3) uint8 RGB array, upright, behind the interface `FaceAnalyzer` reads."""

    def __init__(self, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        self._rgb = rgb
        self.height, self.width = rgb.shape[:2]

    def rgb(self) -> np.ndarray:
        return self._rgb

    def shrunk(self, max_side: int) -> np.ndarray:
        """The frame with its longer side ≤ ``max_side`` (area interpolation), RGB uint8."""
        scale = min(1.0, max_side / max(self.width, self.height))
        if scale == 1.0:
            return self._rgb
        return cv2.resize(self._rgb, (round(self.width * scale), round(self.height * scale)),
                          interpolation=cv2.INTER_AREA)

    def warp(self, matrix: np.ndarray, side: int) -> np.ndarray:
        """(side, side, 3) RGB: the frame under the (2, 3) affine ``matrix`` (upright px → output px),
        bilinear, black outside."""
        return cv2.warpAffine(self._rgb, matrix, (side, side), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


class UprightFrame(ArrayFrame):
    """A decoded frame seen upright; 8-bit 4:2:0 frames are read from their planes without a full conversion.

    Other pixel formats are converted to RGB once (`rgb`) and served by `ArrayFrame`."""

    def __init__(self, frame: av.VideoFrame, rotation_ccw: int) -> None:
        self._k = (rotation_ccw // 90) % 4
        self._frame = frame
        self._rgb = None
        fmt = frame.format.name
        self._planar = fmt in ("yuv420p", "yuvj420p")
        self._limited = fmt == "yuv420p"
        sw, sh = frame.width, frame.height
        self.width, self.height = (sh, sw) if self._k % 2 else (sw, sh)
        self._to_upright = _rotation_affine(self._k, sw, sh)

    def _planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y (h, w) and U, V (h/2, w/2) planes in stored orientation."""
        out = []
        for i, plane in enumerate(self._frame.planes[:3]):
            pw, ph = (self._frame.width, self._frame.height) if i == 0 else (plane.width, plane.height)
            out.append(np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:ph, :pw])
        return out[0], out[1], out[2]

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            rgb = self._frame.to_ndarray(format="rgb24")
            self._rgb = np.ascontiguousarray(np.rot90(rgb, k=self._k)) if self._k else rgb
        return self._rgb

    def shrunk(self, max_side: int) -> np.ndarray:
        if not self._planar or self._rgb is not None:
            return ArrayFrame(self.rgb()).shrunk(max_side)
        scale = min(1.0, max_side / max(self.width, self.height))
        y, u, v = self._planes()
        size = (round(self._frame.width * scale), round(self._frame.height * scale))
        small = [cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in (y, u, v)]
        rgb = _yuv_to_rgb(*small, limited=self._limited)
        return np.ascontiguousarray(np.rot90(rgb, k=self._k)) if self._k else rgb

    def warp(self, matrix: np.ndarray, side: int) -> np.ndarray:
        if not self._planar or self._rgb is not None:
            return ArrayFrame(self.rgb()).warp(matrix, side)
        luma = np.vstack([matrix, [0, 0, 1]]) @ self._to_upright  # stored luma px -> output px
        chroma = luma @ np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # chroma px -> luma px -> output
        y, u, v = self._planes()
        args = dict(dsize=(side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        wy = cv2.warpAffine(y, luma[:2], borderValue=16 if self._limited else 0, **args)
        wu = cv2.warpAffine(u, chroma[:2], borderValue=128, **args)
        wv = cv2.warpAffine(v, chroma[:2], borderValue=128, **args)
        return _yuv_to_rgb(wy, wu, wv, limited=self._limited)


def iter_upright(path: str | Path, *, prefetch: int = 4) -> Iterator[tuple[VideoHeader, UprightFrame]]:
    """Yield ``(header, UprightFrame)`` per frame, decoding up to ``prefetch`` frames ahead in a thread
    (PyAV decodes without the GIL, so decoding overlaps the face models on a second core)."""
    items: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for header, frame in _decode(path):
                if stop.is_set():
                    return
                items.put((header, UprightFrame(frame, header.rotation_ccw)))
            items.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)

    worker = threading.Thread(target=produce, name="face-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
