"""ffmpeg access: which binary, how to call it (argument lists only), and the bundled CJK font."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from lipline.errors import MediaToolError
from lipline.settings import get_settings

FONT_FAMILY = "Noto Sans CJK TC Regular"  # family name inside NotoSansCJKtc-Regular.otf


def ffmpeg_exe() -> str:
    """`LIPLINE_FFMPEG` (`Settings.ffmpeg`), else the full ffmpeg bundled by imageio-ffmpeg (has libass and
    loudnorm), else PATH."""
    return _find_ffmpeg(get_settings().ffmpeg)


@functools.cache
def _find_ffmpeg(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise MediaToolError("no ffmpeg found: install imageio-ffmpeg or set LIPLINE_FFMPEG to an ffmpeg binary")


def run_ffmpeg(args: list[str | os.PathLike], *, what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg with an argument list (never a shell string); raise `MediaToolError` naming `what` on failure.

    Paths are passed as separate arguments; a path starting with ``-`` must be made absolute by the caller
    (all Lipline paths are absolute), so no file name is taken for an option.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *[os.fspath(a) for a in args]]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-6:]
        raise MediaToolError(f"ffmpeg failed while {what} (exit {proc.returncode}): " + " | ".join(tail))
    return proc


@functools.cache
def font_dir() -> Path:
    """A folder holding only the CJK-capable font (libass errors on non-font files in `fontsdir`)."""
    import cvttf_NotoSansCJK_Regular as font_pkg

    return Path(font_pkg.__file__).parent / "fonts-only"


def ensure_font_dir() -> Path:
    """Create (once) a folder with just the Noto Sans CJK font, linked or copied from the installed wheel."""
    import cvttf_NotoSansCJK_Regular as font_pkg

    src = Path(font_pkg.__file__).parent / "NotoSansCJKtc-Regular.otf"
    target_dir = font_dir()
    target = target_dir / src.name
    if not target.exists():
        target_dir.mkdir(exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return target_dir


def filter_value(text: str) -> str:
    """Escape any text for use as an option value inside an ``-filter_complex`` graph.

    ffmpeg unescapes twice: once when it splits the graph into filters (special: backslash, quote, ``[],;``) and
    once when it splits a filter's options (special: backslash, quote, ``:``). So escape for the option level
    first, then for the graph level. Verified with the subtitles filter on a path like ``we ird'$;[a],b=c:d\\e``.
    """
    for ch in ("\\", "'", ":"):
        text = text.replace(ch, "\\" + ch)
    for ch in ("\\", "'", "[", "]", ",", ";"):
        text = text.replace(ch, "\\" + ch)
    return text


def filter_path(path: Path) -> str:
    """Escape a path for use inside an ffmpeg filtergraph option value (subtitles=filename=...)."""
    return filter_value(str(path))
