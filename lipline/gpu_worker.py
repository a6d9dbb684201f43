"""`lipline gpu-worker`: a long-lived process that serves lip-sync segments (Prefect background tasks).

One per GPU (``CUDA_VISIBLE_DEVICES=N lipline gpu-worker``): it takes one segment at a time from the Prefect API,
loads the engine on the first one and keeps it loaded for every later segment and job. It needs a Prefect server
(``PREFECT_API_URL``): Prefect's task workers cannot use the embedded API.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from lipline.settings import SettingsError


def alias_deployed_flow_modules() -> list[str]:
    """Make the flow modules importable under the names a deployment loads them by.

    A deployed run loads its entrypoint (``flows/localize.py:localize``) by path, as the top-level module
    ``localize``, and Prefect pickles that run's context (its ``Flow`` object) with every background task it
    submits. Unpickling here then imports ``localize``, which only exists as ``lipline.flows.localize`` in an
    installed Lipline: each ``lipline.flows`` module is registered under its bare name too (names already taken
    are left alone). Returns the names added."""
    import lipline.flows

    added = []
    for info in pkgutil.iter_modules(lipline.flows.__path__):
        if info.name not in sys.modules:
            sys.modules[info.name] = importlib.import_module(f"lipline.flows.{info.name}")
            added.append(info.name)
    return added


def serve_segments(large: bool = False) -> None:
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise SettingsError("lipline gpu-worker needs a Prefect server: set PREFECT_API_URL (e.g. the one "
                            "`lipline stack status` prints, or http://HOST:4200/api of your server)")
    from lipline.tasks.gpu_tasks import serve

    alias_deployed_flow_modules()
    print(f"lipline gpu-worker: serving {'large-GPU ' if large else ''}lip-sync segments from "
          f"{get_current_settings().api.url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(large=large)
