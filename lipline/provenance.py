"""Where a deliverable came from: Lipline's version and git commit, input hashes."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from lipline import __version__
from lipline.settings import get_settings


def git_commit() -> str:
    """The commit of this checkout (LIPLINE_GIT_COMMIT, `Settings.git_commit`, wins: set it when building images
    without .git)."""
    return get_settings().git_commit or _checkout_commit()


@functools.cache
def _checkout_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        proc = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if proc.returncode != 0:
        return "unknown"
    return proc.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def lipline_version() -> dict[str, str]:
    return {"version": __version__, "git_commit": git_commit()}
