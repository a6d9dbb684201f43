"""Test media helpers live in `lipline.samples` (the demo and benchmarks use them too)."""

from lipline.samples import *  # noqa: F401,F403
from lipline.samples import (SRT_TEXT, bumper, face_png, ffmpeg, pattern_clip, speech_like, subtitles,  # noqa: F401
                             talking_video, write_audio)


def ebur128(path) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) of `path` by ffmpeg's own ``ebur128=peak=true`` filter: a
    reference independent of Lipline's meters (ffmpeg prints both to 0.1)."""
    import re
    import subprocess

    from lipline.media import ffmpeg_exe

    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-filter_complex",
                           "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True, check=True)
    summary = proc.stderr[proc.stderr.rfind("Summary:"):]
    integrated = re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    assert integrated and peak, summary
    return float(integrated.group(1)), float(peak.group(1))


def clipping_runs_reference(samples, threshold: float = 0.999, min_run: int = 3) -> int:
    """Runs of ≥ `min_run` samples at |x| ≥ `threshold`, counted per channel with itertools.groupby (a plain count
    that shares no code with Lipline's streaming counter)."""
    import itertools

    import numpy as np

    x = np.asarray(samples)
    x = x[:, None] if x.ndim == 1 else x
    return sum(1 for ch in range(x.shape[1])
               for hot, run in itertools.groupby(np.abs(x[:, ch]) >= threshold) if hot and len(list(run)) >= min_run)


def faded(samples, sr: int, fade_s: float = 0.05):
    """`samples` with raised-cosine fades at both ends (no edge transient for a true-peak meter to ring on)."""
    import numpy as np

    x = np.array(samples, dtype=np.float64)
    n = int(fade_s * sr)
    ramp = 0.5 * (1 - np.cos(np.pi * np.arange(n) / n))
    w = np.ones(len(x))
    w[:n], w[len(x) - n:] = ramp, ramp[::-1]
    return (x * (w if x.ndim == 1 else w[:, None])).astype(np.float32)
