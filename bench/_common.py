"""Shared helpers of the benchmarks: sample inputs, machine description, appending to RESULTS.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

from lipline import samples

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, no GPU"


def append_results(title: str, command: str, lines: list[str], path: Path | None = RESULTS) -> None:
    """Print the block and append it to ``path`` (default bench/RESULTS.md; None: print only)."""
    block = [f"\n## {title} — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             f"- command: `{command}`", f"- machine: {machine()}", f"- commit: {git_commit()}", "", *lines, ""]
    if path is None:
        print("\n".join(block))
        return
    with Path(path).open("a") as f:
        f.write("\n".join(block))
    print("\n".join(block))


def git_commit() -> str:
    proc = subprocess.run(["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


CAMERA_NOISE = "noise=alls=6:allf=t"  # temporal sensor noise: encodes like camera footage, not like a still


def talking_inputs(folder: Path, duration_s: float, width: int = 1920, height: int = 1080, fps: float = 30,
                   bumpers: bool = True, camera_noise: bool = True) -> dict[str, Path]:
    """A talking clip with its own audio, a dub of the same length, subtitles and (optionally) bumpers."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{int(duration_s)}s-{height}p{int(fps)}" + ("-noisy" if camera_noise else "")
    face = folder / "face.png"
    if not face.exists():
        samples.face_png(face)
    video = folder / f"talk-{tag}.mp4"
    if not video.exists():
        original = samples.write_audio(folder / f"orig-{tag}.wav", samples.speech_like(duration_s, seed=3))
        samples.talking_video(video, face, duration_s, width, height, fps, audio=original,
                              extra_vf=CAMERA_NOISE if camera_noise else "")
    dub = folder / f"dub-{tag}.wav"
    if not dub.exists():
        samples.write_audio(dub, samples.speech_like(duration_s, seed=5))
    out = {"video": video, "audio": dub}
    if bumpers:
        out["subtitles"] = samples.subtitles(folder / "subs.srt")
        out["intro"] = folder / "intro.mp4"
        out["outro"] = folder / "outro.mp4"
        if not out["intro"].exists():
            samples.bumper(out["intro"], 3.0, width, height, fps, with_audio=False)
            samples.bumper(out["outro"], 3.0, width, height, fps, with_audio=True)
    return out
