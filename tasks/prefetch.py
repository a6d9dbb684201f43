"""Validation started early: `lipline run` measures its local inputs in a background thread while Prefect's
embedded API starts (7–10 s of mostly single-core start-up on a small machine), and the flow's validate task takes
the finished reports instead of decoding everything again.

A prefetched result is used only for exactly the same request: the same roles and URIs, the same file sizes and
modification times (a file changed in between is measured again), the same contract overrides and face choice.
It is taken once. Errors travel with it: a request that raises (an unknown override key) raises in the task too.
Remote inputs are never prefetched (the flow fetches them into the job's own work dir).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
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
          measure: Callable[[], object]) -> bool:
    """Run `measure()` (the validation of exactly this request) in a daemon thread; False when not prefetchable."""
    key = request_key(files, overrides, faces)
    if key is None:
        return False
    future: Future = Future()

    def work() -> None:
        try:
            future.set_result(measure())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the result
            future.set_exception(exc)

    with _LOCK:
        _PENDING[key] = future
    threading.Thread(target=work, name="lipline-prefetch-validation", daemon=True).start()
    return True


def take(files: Mapping[str, str], overrides: Mapping[str, float | int] | None, faces: str | None) -> Future | None:
    """The prefetched result of exactly this request (removed: taken once), or None."""
    key = request_key(files, overrides, faces)
    if key is None:
        return None
    with _LOCK:
        return _PENDING.pop(key, None)


__all__ = ["request_key", "start", "take"]
