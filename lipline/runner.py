"""Run the `localize` flow in this process (Prefect's embedded API) with a rich progress bar."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from lipline.errors import user_error
from lipline.params import LocalizeParams
from lipline.progress import listening


class _HideUserErrors(logging.Filter):
    """Prefect logs a failed flow run with its traceback; for errors a user caused, the CLI's one-line message
    says it all (the flow run's log in the Prefect API still has the full record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None and record.args:
            exc = next((a for a in record.args if isinstance(a, BaseException)), None)
        if exc is not None and user_error(exc) is not None:
            return False
        return not ("Finished in state Failed" in record.getMessage() and "LiplineError" not in record.getMessage()
                    and _last_error_was_user_error())


_LAST: list[BaseException] = []


def _last_error_was_user_error() -> bool:
    return bool(_LAST) and user_error(_LAST[-1]) is not None


def quiet_expected_failures() -> None:
    """Attach the filter to Prefect's console handlers (never to the API handler)."""
    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ == "PrefectConsoleHandler" and not any(
                    isinstance(f, _HideUserErrors) for f in handler.filters):
                handler.addFilter(_HideUserErrors())


def _warm_validation() -> None:
    """Import great-expectations and build its context (≈ 2.5 s) while Prefect's embedded server starts."""
    with contextlib.suppress(Exception):  # a warm-up only: validation does the same work itself if this failed
        from lipline.tasks.validate import _gx

        _gx()


def prefetch_validation(params: LocalizeParams) -> bool:
    """Start validating the job's local inputs now, in a background thread, so that the full decode of the video
    overlaps Prefect's start-up; the flow's validate task takes the result (`tasks/prefetch.py`). An optimisation
    only: anything that stops it here leaves validation to the flow."""
    try:
        from lipline.engine_choice import choose_engine
        from lipline.models.registry import get_spec
        from lipline.tasks.validate import prefetch_inputs

        engine, _notices = choose_engine(params)
        faces = params.lipsync.face if get_spec(engine, kind="video").uses_faces else None
        files = {role: uri for role, uri in job_inputs(params).items() if uri}
        return prefetch_inputs(files, params.contract_overrides, faces=faces)
    except Exception:  # noqa: BLE001 - the flow validates (and reports any problem) itself
        return False


def job_inputs(params: LocalizeParams) -> dict[str, str | None]:
    """Role -> URI of every input of a job (None: not given), as the flow validates them."""
    return {"video": params.video_uri, "audio": params.audio_uri, "subtitles": params.subtitles_uri,
            "intro": params.intro_uri, "outro": params.outro_uri}


def check_store(params: LocalizeParams) -> None:
    """Refuse a store that cannot be used (unknown scheme, wrong credentials, unreachable, read-only) in one
    line, before Prefect starts; the flow checks it again for runs started elsewhere."""
    from lipline.store import Store

    store = Store.from_settings(params.store)
    prefix = params.job_id or ".lipline-preflight"
    store.check_writable(prefix)
    if not params.job_id:
        store.delete_prefix(prefix)


def run_localize(params: LocalizeParams, *, show_progress: bool = True, console: Console | None = None,
                 before_flow: Callable[[], object] | None = None):
    """Execute `localize` and return its `LocalizeResult`; Lipline errors propagate unchanged. `before_flow` runs
    after the imports, just before the flow (the CLI waits there for the API it started early)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if not prefetch_validation(params):  # the video's full decode runs while Prefect's API starts
        threading.Thread(target=_warm_validation, name="lipline-warm-gx", daemon=True).start()
    from lipline.flows.localize import localize

    quiet_expected_failures()
    if before_flow is not None:
        before_flow()
    if not show_progress:
        return localize(params)
    # 2 redraws a second, not rich's 10: the bar moves in whole percents and the clock in seconds, and a 10-min job
    # spent ~7 CPU s redrawing on a terminal (0.016 CPU s a second at 10, measured), CPU the final encode wants
    progress = Progress(TextColumn("[bold]{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TimeElapsedColumn(), console=console or Console(stderr=True), transient=True,
                        refresh_per_second=2)
    bar = progress.add_task("starting", total=1.0)

    def on_progress(stage: str, fraction: float) -> None:
        progress.update(bar, description=stage, completed=fraction)

    with progress, listening(on_progress), contextlib.suppress():
        return localize(params)
