"""Talking clips with a known AV offset, for the sync estimator's tests and benchmark.

* **Speech**: a voiced harmonic signal (f0 ≈ 120 Hz) whose amplitude follows a random *syllable envelope*:
  syllables of random length (0.12-0.35 s) and loudness with raised-cosine shapes, and random pauses. Random, not
  periodic, so only one alignment of mouth and sound matches.
* **Picture**: the astronaut portrait (Eileen Collins, NASA, public domain; scikit-image ``data.astronaut``) whose
  lower lip and jaw are warped down by the envelope's value at each frame, the opened gap painted as a dark mouth
  interior. MediaPipe's FaceMesh sees the lips part (its inner-lip gap follows the warp with r ≈ 0.97).
* **Offset**: the audio of a clip with offset ``k`` frames is the same speech delayed by ``k`` frames (+ = audio
  late), cut from a longer signal so no shift pads with silence.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from lipline.media import ffmpeg_exe
from lipline.samples import write_audio
from tests.models.face.clips import write_clip

FPS = 25
SR = 16000
SIDE = 480  # frame width = height
MARGIN_S = 1.0  # extra speech before and after the clip, to shift the audio into
MAX_OPEN_PX = 14.0  # lower lip drop at full loudness, on a ~165-px face


@dataclass(frozen=True)
class Speech:
    """A syllable envelope (per sample, 0..1) and the speech signal it modulates, ``MARGIN_S`` longer each side."""

    envelope: np.ndarray
    signal: np.ndarray
    duration_s: float


def make_speech(duration_s: float, seed: int) -> Speech:
    rng = np.random.default_rng(seed)
    total = duration_s + 2 * MARGIN_S
    n = int(round(total * SR))
    env = np.zeros(n)
    t = 0.05
    while t < total:
        if rng.random() < 0.2:  # a pause
            t += rng.uniform(0.15, 0.6)
            continue
        length = rng.uniform(0.12, 0.35)
        i0, i1 = int(t * SR), min(n, int((t + length) * SR))
        shape = 0.5 * (1 - np.cos(2 * np.pi * np.arange(i1 - i0) / max(1, i1 - i0)))
        env[i0:i1] = np.maximum(env[i0:i1], rng.uniform(0.35, 1.0) * shape)
        t += length * rng.uniform(0.7, 1.0)  # syllables may overlap a little
    time = np.arange(n) / SR
    f0 = 120 + 15 * np.sin(2 * np.pi * 0.5 * time + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    signal = 0.25 * env * voice / np.abs(voice).max() + 0.002 * rng.standard_normal(n)
    return Speech(env, signal.astype(np.float32), duration_s)


def audio_with_offset(speech: Speech, offset_frames: int) -> np.ndarray:
    """The clip's audio with the sound ``offset_frames`` frames late (+) or early (−) against the mouth."""
    start = int(round((MARGIN_S - offset_frames / FPS) * SR))
    return speech.signal[start:start + int(round(speech.duration_s * SR))]


def mouth_per_frame(speech: Speech) -> np.ndarray:
    """(frames,) opening 0..1: the envelope's mean over each frame's display interval of the clip."""
    n = int(round(speech.duration_s * FPS))
    first = int(round(MARGIN_S * SR))
    bounds = first + np.round(np.arange(n + 1) * SR / FPS).astype(int)
    return np.array([speech.envelope[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:])])


@lru_cache(maxsize=1)
def _portrait() -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The portrait at SIDE×SIDE and its FaceMesh points that the warp needs (measured once)."""
    from skimage import data

    from lipline.models.face.detect import FaceAnalyzer

    base = cv2.resize(np.ascontiguousarray(data.astronaut()[20:320, 70:370]), (SIDE, SIDE),
                      interpolation=cv2.INTER_LINEAR)
    with FaceAnalyzer() as analyzer:
        faces = analyzer.detect(base)
        mesh = analyzer.landmarks(base, faces[0].box)
    return base, {i: mesh.points[i] for i in (13, 14, 78, 308, 152)}


class MouthWarp:
    """Renders the portrait with the lower lip and jaw dropped by ``opening · MAX_OPEN_PX`` pixels."""

    def __init__(self) -> None:
        self.base, pts = _portrait()
        yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
        self.xx, self.yy = xx, yy
        left, right = pts[78][0], pts[308][0]
        self.lip_line = (pts[13][1] + pts[14][1]) / 2
        chin = pts[152][1] + 40
        cx, half = (left + right) / 2, (right - left) / 2
        wx = np.sqrt(np.clip(1 - ((xx - cx) / (half + 25)) ** 2, 0, 1))
        wy = np.where(yy >= self.lip_line, np.clip((chin - yy) / (chin - self.lip_line), 0, 1), 0)
        self.weight = (wx * wy).astype(np.float32)  # 1 at the lip line, fading to 0 below the chin and sideways
        self.mouth_width = np.clip(1 - ((xx - cx) / half) ** 2, 0, 1)

    def frame(self, opening: float) -> np.ndarray:
        drop = float(opening) * MAX_OPEN_PX
        out = cv2.remap(self.base, self.xx, self.yy - drop * self.weight, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
        gap = (self.yy >= self.lip_line) & (self.yy < self.lip_line + drop * self.mouth_width)
        out[gap] = (45, 20, 25)
        return out


def write_video(path: Path, speech: Speech) -> Path:
    """The silent talking clip of ``speech`` (H.264, SIDE×SIDE, FPS)."""
    warp = MouthWarp()
    return write_clip(path, [warp.frame(o) for o in mouth_per_frame(speech)], fps=FPS, size=(SIDE, SIDE))


def mux(video: Path, audio: np.ndarray, out: Path) -> Path:
    """``video`` with ``audio`` (mono, SR) as AAC."""
    wav = write_audio(out.with_suffix(".wav"), audio[:, None], SR)
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-i", str(wav),
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)], check=True)
    return out


SECONDS = 6.0
SEED, OTHER_SEED = 1, 11


@dataclass(frozen=True)
class ClipSet:
    """The clips the sync tests share (one silent talking video, its speech, and files made from them)."""

    speech: Speech
    silent: Path  # the talking clip without audio
    folder: Path

    def with_offset(self, offset_frames: int) -> Path:
        """The talking clip with its own speech ``offset_frames`` late (AAC in MP4); made on first use."""
        out = self.folder / f"talk_{offset_frames:+d}.mp4"
        return out if out.exists() else mux(self.silent, audio_with_offset(self.speech, offset_frames), out)

    def unrelated(self) -> Path:
        """The talking clip with another speaker's speech (same kind of signal, another random envelope)."""
        out = self.folder / "talk_unrelated.mp4"
        return out if out.exists() else mux(self.silent, audio_with_offset(make_speech(SECONDS, OTHER_SEED), 0), out)

    def wav(self, offset_frames: int) -> Path:
        return write_audio(self.folder / f"speech_{offset_frames:+d}.wav",
                           audio_with_offset(self.speech, offset_frames)[:, None], SR)


def clip_set(folder: Path) -> ClipSet:
    speech = make_speech(SECONDS, SEED)
    return ClipSet(speech, write_video(folder / "talk_silent.mp4", speech), folder)


def short_clip(folder: Path, seconds: float = 1.2, seed: int = 21) -> Path:
    """A short talking clip with its speech in sync (1.2 s = 30 frames = 25 SyncNet windows: the lip tower costs
    ~0.5 s a window on a CPU)."""
    speech = make_speech(seconds, seed)
    return mux(write_video(folder / "short_silent.mp4", speech), audio_with_offset(speech, 0), folder / "short.mp4")
