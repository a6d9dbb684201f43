"""Run the `localize` flow in this process (Prefect's embedded API) with a rich progress bar."""

from __future__ import annotations

import contextlib
import os

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lipline.params import LocalizeParams
from lipline.progress import listening


def run_localize(params: LocalizeParams, *, show_progress: bool = True, console: Console | None = None):
    """Execute `localize` and return its `LocalizeResult`; Lipline errors propagate unchanged."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from lipline.flows.localize import localize

    if not show_progress:
        return localize(params)
    progress = Progress(TextColumn("[bold]{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeElapsedColumn(), console=console or Console(stderr=True), transient=True)
    bar = progress.add_task("starting", total=1.0)

    def on_progress(stage: str, fraction: float) -> None:
        progress.update(bar, description=stage, completed=fraction)

    with progress, listening(on_progress), contextlib.suppress():
        return localize(params)
