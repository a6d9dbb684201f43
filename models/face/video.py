"""Stream a video's frames upright (display-matrix rotation applied) as RGB arrays, one at a time.

PyAV reports a frame's display matrix as ``frame.rotation`` in degrees counter-clockwise (what a player turns
the stored picture by); ``np.rot90(k=ccw // 90)`` applies it. Nothing here holds more than one frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
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


def _ccw_quarters(frame: av.VideoFrame) -> int:
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


def iter_frames(path: str | Path, *, keep: "callable | None" = None) -> Iterator[tuple[VideoHeader, np.ndarray | None]]:
    """Yield ``(header, rgb)`` per decoded frame; ``rgb`` is (H, W, 3) uint8 upright, C-contiguous.

    ``keep(index) -> bool`` skips the RGB conversion of frames it rejects (they yield ``None``), so sampling
    a few frames per second costs a decode, not a conversion. Raises `InputError` when the file cannot be read;
    a file that breaks mid-way ends the iteration at the last good frame.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        estimate = int(stream.frames or 0)
        if not estimate and container.duration:
            estimate = int(round(container.duration / av.time_base * fps))
        header: VideoHeader | None = None
        index = 0
        try:
            for frame in container.decode(stream):
                if header is None:
                    k = _ccw_quarters(frame)
                    w, h = (frame.height, frame.width) if k % 2 else (frame.width, frame.height)
                    header = VideoHeader(w, h, fps, estimate, 90 * k)
                rgb = None
                if keep is None or keep(index):
                    rgb = frame.to_ndarray(format="rgb24")
                    if header.rotation_ccw:
                        rgb = np.ascontiguousarray(np.rot90(rgb, k=header.rotation_ccw // 90))
                yield header, rgb
                index += 1
        except (av.FFmpegError, EOFError) as exc:
            if header is None:
                raise InputError(str(path), "video", f"cannot be decoded ({exc})",
                                 "Re-export the video (H.264/H.265 in MP4 or MOV).") from None
    finally:
        container.close()
