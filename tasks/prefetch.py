"""Validation started early: `lipline run` measures its local inputs in a background process while Prefect's
embedded API starts (7–10 s of mostly single-core start-up on a small machine), and the flow's validate task takes
the finished reports instead of decoding everything again.

A prefetched result is used only for exactly the same request: the same roles and URIs, the same file sizes and
modification times (a file changed in between is measured again), the same contract overrides and face choice.
It is taken once. Errors travel with it: a request that raises (an unknown override key) raises in the task too.
Remote inputs are never prefetched (the flow fetches them into the job's own work dir).

The measurement runs in a separate process (spawned: its own interpreter, no GIL shared with the imports of the
flow, and great-expectations' ~200 MB never loaded into the job's process), falling back to a thread when a process
cannot be started. Whatever goes wrong in that process, `validate_inputs` measures again in its own.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Callable, Mapping

from lipline.uris import is_local, to_path

Key = tuple
_PENDING: dict[Key, Future] = {}
_LOCK = threading.Lock()


def request_key(files: Mapping[str, str], overrides: Mapping[str, float | int] | None,
                faces: str | None) -> Key | None:
    """What a validation result depends on; None when an input is remote or cannot be stat'ed."""
    parts = []
    for role, uri in sorted(files.items()):
        if not is_local(uri):
            return None
        try:
            st = os.stat(to_path(uri))
        except OSError:
            return None
        parts.append((role, uri, st.st_size, st.st_mtime_ns))
    return tuple(parts), tuple(sorted((overrides or {}).items())), faces


def start(files: Mapping[str, str], overrides: Mapping[str, float | int] | None, faces: str | None,
          measure: Callable[..., object], /, *args, **kwargs) -> bool:
    """Run ``measure(*args, **kwargs)`` (the validation of exactly this request; a module-level function) in a
    separate process — in a daemon thread if none can be started; False when not prefetchable."""
    key = request_key(files, overrides, faces)
    if key is None:
        return False
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = pool.submit(measure, *args, **kwargs)
        pool.shutdown(wait=False)  # the worker exits once this one measurement is done
    except (OSError, RuntimeError):
        future = Future()

        def work() -> None:
            try:
                future.set_result(measure(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the result
                future.set_exception(exc)

        threading.Thread(target=work, name="lipline-prefetch-validation", daemon=True).start()
    with _LOCK:
        _PENDING[key] = future
    return True


def take(files: Mapping[str, str], overrides: Mapping[str, float | int] | None, faces: str | None) -> Future | None:
    """The prefetched result of exactly this request (removed: taken once), or None."""
    key = request_key(files, overrides, faces)
    if key is None:
        return None
    with _LOCK:
        return _PENDING.pop(key, None)


__all__ = ["request_key", "start", "take"]
