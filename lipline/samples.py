"""Sample media for the demo, tests and benchmarks, generated with real ffmpeg (lavfi), a public-domain face
(NASA astronaut photo shipped in scikit-image) and synthetic speech-like audio. Nothing binary is committed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from lipline.media import ffmpeg_exe


def ffmpeg(*args: str | Path) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *map(str, args)]
    subprocess.run(cmd, check=True, capture_output=True)


def face_png(path: Path) -> Path:
    """The astronaut portrait (Eileen Collins, NASA, public domain) as a PNG."""
    from skimage import data
    import cv2

    rgb = data.astronaut()
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def speech_like(duration_s: float, sr: int = 44100, channels: int = 2, level_db: float = -20.0,
                pauses: tuple[tuple[float, float], ...] | None = None, seed: int = 0) -> np.ndarray:
    """Voiced, syllable-modulated harmonic signal with real pauses. Returns (samples, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum((1.0 / k) * np.sin(k * phase) for k in range(1, 12))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t - np.pi / 2)) ** 2
    noise = 0.05 * rng.standard_normal(t.size)
    sig = voice * syllables + noise * syllables
    if pauses is None:
        pauses = tuple((s, s + 0.7) for s in np.arange(3.0, duration_s - 1.0, 3.5))
    for start, end in pauses:
        sig[int(start * sr):int(end * sr)] = 0.0
    sig = sig / np.sqrt(np.mean(sig**2) + 1e-12) * 10 ** (level_db / 20)
    return np.repeat(sig[:, None], channels, axis=1).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, sr: int = 44100) -> Path:
    if path.suffix == ".wav":
        sf.write(path, samples, sr, subtype="PCM_16")
    else:
        tmp = path.with_suffix(".tmp.wav")
        sf.write(tmp, samples, sr, subtype="PCM_16")
        ffmpeg("-i", tmp, path)
        tmp.unlink()
    return path


def talking_video(path: Path, face: Path, duration_s: float, width: int = 640, height: int = 360, fps: float = 25,
                  audio: Path | None = None, extra_vf: str = "", extra: tuple[str, ...] = ()) -> Path:
    """The still face with a 'mouth' box that opens and closes; H.264 yuv420p (+ AAC if audio).
    `extra_vf` appends filters (e.g. ``noise=alls=6:allf=t`` for camera-like sensor noise)."""
    vf = (f"scale={width}:{height}:force_original_aspect_ratio=decrease,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,"
          f"drawbox=x=iw/2-20:y=ih*0.55:w=40:h='6+6*sin(t*25)':color=black@0.8:t=fill,fps={fps}")
    if extra_vf:
        vf += "," + extra_vf
    args: list = ["-loop", "1", "-framerate", str(fps), "-t", str(duration_s), "-i", face]
    if audio is not None:
        args += ["-i", audio, "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-shortest"]
    args += ["-vf", vf, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", str(fps), *extra, path]
    ffmpeg(*args)
    return path


def pattern_clip(path: Path, w: int = 640, h: int = 360, fps: float = 25, dur: float = 2.0, vf: str = "",
                 pix_fmt: str = "yuv420p", extra: tuple[str, ...] = ()) -> Path:
    """A silent moving test pattern (lavfi testsrc2), optionally filtered; for contract and probe tests."""
    args: list = ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={dur}"]
    if vf:
        args += ["-vf", vf]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt, *extra, path]
    ffmpeg(*args)
    return path


def bumper(path: Path, duration_s: float, width: int, height: int, fps: float, with_audio: bool) -> Path:
    """An intro/outro card: test pattern, optionally with a tone."""
    args: list = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={duration_s}"]
    if with_audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={duration_s}",
                 "-c:a", "aac", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path]
    ffmpeg(*args)
    return path


SRT_TEXT = """1
00:00:00,500 --> 00:00:02,500
你好，世界

2
00:00:03,000 --> 00:00:05,000
Hello, こんにちは

3
00:00:06,000 --> 00:00:08,000
안녕하세요
"""


def subtitles(path: Path, text: str = SRT_TEXT, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path
