"""Which lip-sync engine a job runs: 'auto' resolved, and a job refused early when its engine cannot run.

Light (no torch, no Prefect): the CLI calls it before it starts Prefect, the flow calls it again in `open_job`
(runs started from the UI or the API).
"""

from __future__ import annotations

from lipline.models.registry import get_spec
from lipline.params import LocalizeParams


def choose_engine(params: LocalizeParams) -> tuple[str, list[str]]:
    """The engine to run and the notices it brings: 'auto' = latentsync when its weights are in the cache, else
    passthrough (said so); latentsync without weights fails now, naming the command that fetches them."""
    from lipline.models.latentsync.smoke import SMOKE_NOTE, smoke_marker
    from lipline.models.latentsync.weights import WeightsNotFound, resolve

    name = params.engine
    if not get_spec(name if name != "auto" else "latentsync", kind="video").uses_faces:
        return name, []
    options = params.lipsync
    try:
        weights = resolve(options.model_version, options.weights_dir)
    except WeightsNotFound as exc:
        if name != "auto":
            raise
        return "passthrough", [f"engine auto: DRY RUN, no lip-sync (original frames under the new audio): {exc}"]
    return "latentsync", [SMOKE_NOTE] if smoke_marker(weights.unet_path) is not None else []


__all__ = ["choose_engine"]
