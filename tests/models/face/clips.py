"""Synthetic face clips for the face-track tests, built from public-domain pictures shipped in installed wheels.

* astronaut — Eileen Collins, NASA (scikit-image ``data.astronaut``), public domain
* grace — Grace Hopper, US Navy (matplotlib sample data ``grace_hopper.jpg``), public domain
* cat / coffee — scikit-image ``data.chelsea`` / ``data.coffee`` (public domain / CC0), negatives

A clip is a list of frames, each a list of `Sprite` placements on a grey background; `write_clip` encodes it
with PyAV (H.264, yuv420p). Sprite geometry is known, so tests can say where each face is in every frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import av
import cv2
import numpy as np

from lipline.media import ffmpeg_exe

FPS = 25
W, H = 480, 320
BACKGROUND = (96, 104, 112)


@dataclass(frozen=True)
class Portrait:
    """A head-and-shoulders crop (RGB uint8) and where its face box is inside it (x, y, w, h)."""

    rgb: np.ndarray
    face: tuple[float, float, float, float]


@lru_cache(maxsize=None)
def portrait(name: str) -> Portrait:
    from skimage import data

    if name == "astronaut":
        return Portrait(np.ascontiguousarray(data.astronaut()[10:290, 110:340]), (64, 58, 104, 104))
    if name == "grace":
        import matplotlib.cbook as cbook
        import matplotlib.image as mpimg

        img = mpimg.imread(cbook.get_sample_data("grace_hopper.jpg"))
        img = (img * 255).astype(np.uint8) if img.dtype != np.uint8 else img
        return Portrait(np.ascontiguousarray(img[40:440, 80:450, :3]), (86, 88, 200, 200))
    if name == "cat":
        return Portrait(np.ascontiguousarray(data.chelsea()), (0, 0, 0, 0))
    if name == "coffee":
        return Portrait(np.ascontiguousarray(data.coffee()), (0, 0, 0, 0))
    raise ValueError(f"unknown portrait {name!r}")


@dataclass(frozen=True)
class Sprite:
    """``name``'s portrait placed with its face centre at (cx, cy), face height ``face_px``, turned
    ``angle`` degrees (counter-clockwise)."""

    name: str
    cx: float
    cy: float
    face_px: float
    angle: float = 0.0

    def face_box(self) -> tuple[float, float, float, float]:
        """Approximate face box in the frame (x, y, w, h), ignoring the small rotation."""
        return self.cx - self.face_px / 2, self.cy - self.face_px / 2, self.face_px, self.face_px


def render(sprites: Sequence[Sprite], width: int = W, height: int = H) -> np.ndarray:
    """(height, width, 3) uint8 RGB frame with the sprites drawn in order (later ones on top)."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUND
    for s in sprites:
        p = portrait(s.name)
        fx, fy, fw, fh = p.face
        scale = s.face_px / fh
        centre = (fx + fw / 2, fy + fh / 2)
        m = cv2.getRotationMatrix2D(centre, s.angle, scale)  # keeps the face centre in place
        m[:, 2] += (s.cx - centre[0], s.cy - centre[1])
        cv2.warpAffine(p.rgb, m, (width, height), dst=frame, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
    return frame


def write_clip(path: Path, frames: Sequence[Sequence[Sprite]] | Sequence[np.ndarray], fps: int = FPS,
               size: tuple[int, int] = (W, H)) -> Path:
    """Encode frames (sprite lists or RGB arrays) as H.264 yuv420p MP4."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16", "preset": "ultrafast"}
        for f in frames:
            rgb = f if isinstance(f, np.ndarray) else render(f, *size)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def timeline(seconds: float, at: Callable[[float], list[Sprite]], fps: int = FPS) -> list[list[Sprite]]:
    return [at(i / fps) for i in range(int(round(seconds * fps)))]


# --- the clips -------------------------------------------------------------------------------------------------

def moving(t: float) -> list[Sprite]:
    """The astronaut drifting, scaling 70–110 px and turning ±8° (3 s)."""
    return [Sprite("astronaut", 200 + 60 * math.sin(t * 1.3), 150 + 20 * math.sin(t * 2.1),
                   90 + 20 * math.sin(t * 1.7), 8 * math.sin(t * 2.5))]


LEAVE_START_S, LEAVE_END_S = 1.0, 3.0


def leaving(t: float) -> list[Sprite]:
    """The astronaut slides out to the right just after 1 s, is away until 3 s, slides back in (4 s total).
    Slide-out/in take 0.2 s each, outside the [1.0, 3.0) window in which no part of the face is visible."""
    x = 240.0
    if LEAVE_START_S - 0.2 <= t < LEAVE_START_S:
        x = 240 + (t - (LEAVE_START_S - 0.2)) / 0.2 * 400
    elif LEAVE_START_S <= t < LEAVE_END_S:
        x = 900.0
    elif LEAVE_END_S <= t < LEAVE_END_S + 0.2:
        x = 640 - (t - LEAVE_END_S) / 0.2 * 400
    return [Sprite("astronaut", x, 150, 100)]


def two_faces(t: float) -> list[Sprite]:
    """Astronaut (left) starts larger than Grace (right) and shrinks below her (3 s)."""
    return [Sprite("astronaut", 130, 150, 130 - 25 * t), Sprite("grace", 350, 160, 90)]


def second_enters(t: float) -> list[Sprite]:
    """Astronaut alone on the left; Grace slides in from the right at 1 s and ends larger (3 s)."""
    sprites = [Sprite("astronaut", 130, 150, 90)]
    if t >= 1.0:
        sprites.append(Sprite("grace", 560 - min(t - 1.0, 0.6) / 0.6 * 200, 160, 90 + 30 * min(t - 1.0, 1.0)))
    return sprites


def crossing(t: float) -> list[Sprite]:
    """Astronaut walks right, Grace walks left, passing each other (Grace in front) (3 s)."""
    return [Sprite("astronaut", 80 + 110 * t, 150, 90), Sprite("grace", 400 - 110 * t, 170, 80)]


def still(name: str) -> Callable[[float], list[Sprite]]:
    return lambda t: [Sprite(name, W / 2, H / 2, 110)]


def negative(name: str) -> np.ndarray:
    """The whole picture scaled to the frame."""
    return cv2.resize(portrait(name).rgb, (W, H), interpolation=cv2.INTER_AREA)


def phone_clip(folder: Path, seconds: float = 1.0) -> tuple[Path, Path]:
    """A portrait (upright 240×320) clip stored landscape with a display matrix, like a phone recording.

    Returns (rotated file, upright reference file). The stored pixels are the upright picture turned 90°
    clockwise; ``-display_rotation 90`` (counter-clockwise) tells players to turn it back.
    """
    upright = [render([Sprite("astronaut", 120, 150, 100)], 240, 320) for _ in range(int(seconds * FPS))]
    reference = write_clip(folder / "phone-upright.mp4", upright, size=(240, 320))
    stored = write_clip(folder / "phone-stored.mp4", [np.ascontiguousarray(np.rot90(f, k=-1)) for f in upright],
                        size=(320, 240))
    rotated = folder / "phone-rotated.mp4"
    import subprocess

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-display_rotation", "90",
                    "-i", str(stored), "-c", "copy", str(rotated)], check=True)
    return rotated, reference
