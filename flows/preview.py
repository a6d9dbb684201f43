"""The `preview` flow: a `localize` job made small for an operator's laptop (the `laptop` work pool, a 2 GB GPU).

The preview's video is cut to its first 30 s and scaled to ≤ 512 px on the short side, its dub cut the same
(`tasks/preview.py`); then the real pipeline runs on them (`flows/localize.py`: the same stages, store and job id
rules). When the laptop cannot do it — the engine's out-of-memory ladder runs out (`InsufficientGPUMemory`), or
the lip-sync stage measures slower than ``LIPLINE_PREVIEW_MAX_SLOWDOWN`` seconds per second of video while
segments remain — the run stops, resubmits itself with the same parameters (and the same job id) to
``LIPLINE_PREVIEW_FALLBACK_DEPLOYMENT`` (`preview/preview-gpu`, the `gpu` pool), says so in its log and in a
markdown artifact, and ends **Completed, named "Resubmitted"**: nothing failed (the operator gets the preview
from the GPU run), and it was not cancelled by anyone; the state's message names the new run.
"""

from __future__ import annotations

from typing import Optional

from prefect import flow, get_run_logger
from prefect.states import Completed
from pydantic import BaseModel

from lipline.errors import DeploymentNotFound, InsufficientGPUMemory, ValidationFailed
from lipline.flows.localize import LocalizeResult, job_lifetime, open_job, run_stages
from lipline.params import LocalizeParams
from lipline.settings import get_settings
from lipline.tasks.preview import PreviewTooSlow, SlowdownWatch, prepare_preview


class Resubmission(BaseModel):
    """Why a preview left the laptop, what was measured, and the run that took it over."""

    reason: str                      # "out of GPU memory" | "too slow"
    detail: str
    measured: dict                   # slowdown figures, or the out-of-memory ladder's rungs
    deployment: str
    flow_run_id: str
    flow_run_name: str
    flow_run_url: Optional[str] = None


class PreviewResult(BaseModel):
    job_id: str
    resubmitted: Optional[Resubmission] = None
    localize: Optional[LocalizeResult] = None   # the deliverable, when the preview was made here
    width: int
    height: int
    seconds: float
    lipsync_slowdown: Optional[dict] = None     # the last measurement of the lip-sync stage here


@flow(name="preview", description="A ≤ 512 px, ≤ 30 s localize job for a laptop GPU; out of memory or too slow: "
                                  "resubmitted to the gpu pool")
def preview(params: LocalizeParams, resubmit: bool = True):
    """Run a preview of `params` here; `resubmit` False (the gpu-pool deployment) fails instead of resubmitting."""
    logger = get_run_logger()
    job = open_job(params)
    logger.info("preview %s -> %s", job.job_id, job.store.uri(job.job_id))
    with job_lifetime(job):
        made = prepare_preview(params, job.workdir / "preview")
        job.notices.append(made.notice(params))
        job.params = params.model_copy(update={"video_uri": str(made.video), "audio_uri": str(made.audio),
                                               "intro_uri": None, "outro_uri": None, "job_id": job.job_id})
        # timed everywhere (the figures go in the result), judged only where there is a faster pool to go to:
        # the gpu pool's run is the last stop, however busy its machine is
        limit = get_settings().preview_max_slowdown if resubmit else float("inf")
        watch = SlowdownWatch(job.job_id, made.lipsync_seconds(params), limit)
        job.progress = watch
        size = {"width": made.width, "height": made.height, "seconds": min(made.video_s, made.audio_s)}
        try:
            done = run_stages(job)
        except ValidationFailed as exc:  # named by the operator's files, not the preview's temp copies
            copies = {str(made.video): f"{params.video_uri} (its preview)", str(made.audio): f"{params.audio_uri} "
                      "(its preview)"}
            raise ValidationFailed([r.model_copy(update={"file": copies.get(r.file, r.file)})
                                    for r in exc.reports]) from None
        except (InsufficientGPUMemory, PreviewTooSlow) as exc:
            if not resubmit:
                raise
            # The new run clears this job id's keys itself (`open_job`); it only needs the lock.
            job.lock.release()
            moved = resubmit_to_gpu(params.model_copy(update={"job_id": job.job_id}), exc)
            return Completed(name="Resubmitted", message=f"{moved.reason} on this machine: resubmitted to "
                                                         f"{moved.deployment} as flow run {moved.flow_run_name} "
                                                         f"({moved.flow_run_id})",
                             data=PreviewResult(job_id=job.job_id, resubmitted=moved, **size,
                                                lipsync_slowdown=watch.last.as_dict() if watch.last else None))
        return PreviewResult(job_id=job.job_id, localize=done, **size,
                             lipsync_slowdown=watch.last.as_dict() if watch.last else None)


def resubmit_to_gpu(params: LocalizeParams, exc: InsufficientGPUMemory | PreviewTooSlow) -> Resubmission:
    """Start the same preview on the fallback deployment (not waited for), then log it and publish the artifact."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.urls import url_for

    name = get_settings().preview_fallback_deployment
    if isinstance(exc, PreviewTooSlow):
        reason, measured = "too slow", exc.figures.as_dict()
    else:
        reason, measured = "out of GPU memory", {"rungs": exc.rungs}
    from prefect.runtime import flow_run

    # One resubmission per laptop run, even when the busy API's answer is lost and the client sends it again
    # (seen in CI: the same preview created twice, the second refused as JobExists after the first delivered).
    key = f"lipline-preview-resubmit-{flow_run.id}" if flow_run.id else None
    try:
        run = run_deployment(name, parameters={"params": params.model_dump(mode="json"), "resubmit": False},
                             timeout=0, idempotency_key=key)
    except (ObjectNotFound, ValueError) as err:
        raise DeploymentNotFound(f"preview {params.job_id} stopped here ({reason}: {exc}) but "
                                 f"LIPLINE_PREVIEW_FALLBACK_DEPLOYMENT={name!r} is not a deployment in the Prefect "
                                 f"API ({type(err).__name__}); deploy deployments/prefect.yaml or set it to "
                                 "FLOW/DEPLOYMENT as `prefect deployment ls` lists it") from err
    moved = Resubmission(reason=reason, detail=str(exc), measured=measured, deployment=name,
                         flow_run_id=str(run.id), flow_run_name=run.name, flow_run_url=url_for(run))
    get_run_logger().warning("preview %s stopped here, %s: %s. Resubmitted to %s as flow run %s (%s) %s",
                             params.job_id, reason, exc, name, run.name, run.id, moved.flow_run_url or "")
    create_markdown_artifact(resubmission_markdown(params, moved), key="preview-resubmitted",
                             description=f"Preview {params.job_id} resubmitted to {name} ({reason})")
    return moved


def resubmission_markdown(params: LocalizeParams, moved: Resubmission) -> str:
    """The artifact an operator reads in the laptop run: why, the figures, and where the preview went."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in moved.measured.items())
    link = f"[{moved.flow_run_name}]({moved.flow_run_url})" if moved.flow_run_url else moved.flow_run_name
    return (f"# Preview resubmitted to the gpu pool\n\n"
            f"Job `{params.job_id}` stopped on this machine: **{moved.reason}**.\n\n"
            f"{moved.detail}\n\n| measured | value |\n|---|---|\n{rows}\n\n"
            f"Resubmitted with the same parameters to `{moved.deployment}`: flow run {link} (`{moved.flow_run_id}`). "
            f"The deliverable will be at the same job id in the store.\n")
