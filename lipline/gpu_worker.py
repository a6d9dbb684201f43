"""`lipline gpu-worker`: a long-lived process that serves lip-sync segments (Prefect background tasks).

One per GPU (``CUDA_VISIBLE_DEVICES=N lipline gpu-worker``): it takes one segment at a time from the Prefect API,
loads the engine on the first one and keeps it loaded for every later segment and job. It needs a Prefect server
(``PREFECT_API_URL``): Prefect's task workers cannot use the embedded API.
"""

from __future__ import annotations

import sys

from lipline.settings import SettingsError


def serve_segments(large: bool = False) -> None:
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise SettingsError("lipline gpu-worker needs a Prefect server: set PREFECT_API_URL (e.g. the one "
                            "`lipline stack status` prints, or http://HOST:4200/api of your server)")
    from lipline.tasks.gpu_tasks import serve

    print(f"lipline gpu-worker: serving {'large-GPU ' if large else ''}lip-sync segments from "
          f"{get_current_settings().api.url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(large=large)
