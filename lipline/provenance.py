"""Where a deliverable came from: Lipline's version and git commit, input hashes."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from lipline import __version__


@functools.cache
def git_commit() -> str:
    """The commit of this checkout (LIPLINE_GIT_COMMIT wins: set it when building images without .git)."""
    if os.environ.get("LIPLINE_GIT_COMMIT"):
        return os.environ["LIPLINE_GIT_COMMIT"]
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
