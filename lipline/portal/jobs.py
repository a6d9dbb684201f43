"""Start and watch `localize` and `preview` jobs from the portal.

Two runners, chosen by ``LIPLINE_PORTAL_RUNNER``: `DeploymentRunner` creates a flow run of the ``localize/localize``
(or ``preview/preview``) deployment through ``PREFECT_API_URL`` (workers run it); `InProcessRunner` runs the flow
in a background thread of the portal, one job at a time (the embedded defaults: a laptop, a local store). Each started job leaves a record at
``_portal/jobs/<job_id>.json``; its state comes from the store first (``manifest.json`` = completed,
``status.json`` = failed, with its stage and reasons), then from the runner (Prefect's flow-run state and progress
artifact, or the thread's own progress).
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from uuid import UUID

from lipline.errors import LiplineError, one_line, user_error
from lipline.params import LocalizeParams
from lipline.settings import get_settings
from lipline.store import Store

JOBS = "_portal/jobs"
#: what the start form offers: flow -> its deployment (a preview is ≤ 512 px, ≤ 30 s, on the `laptop` pool)
DEPLOYMENTS = {"localize": "localize/localize", "preview": "preview/preview"}


class JobStartError(LiplineError):
    """A job the runner could not start (named, with what to do)."""


def new_job_id() -> str:
    return datetime.now(timezone.utc).strftime("p%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass
class JobView:
    """One row of the job list."""

    job_id: str
    state: str
    stage: str = ""
    progress: float = 0.0
    message: str = ""
    started_at: str = ""
    user: str = ""
    flow_run_id: str | None = None
    ui_url: str | None = None
    record: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in ("Completed", "Failed", "Crashed", "Cancelled")


@dataclass
class _Live:
    state: str = "Scheduled"
    stage: str = ""
    progress: float = 0.0
    message: str = ""


class InProcessRunner:
    """Runs jobs in one background thread of this process, in the order they were started."""

    mode = "in-process"

    def __init__(self, warm_up: bool = True) -> None:
        self.warm_up = warm_up
        self._queue: queue.Queue[tuple[str, LocalizeParams]] = queue.Queue()
        self._live: dict[str, _Live] = {}
        self._thread = threading.Thread(target=self._work, name="lipline-portal-jobs", daemon=True)
        self._thread.start()

    def submit(self, params: LocalizeParams, flow: str = "localize") -> str | None:
        self._live[params.job_id] = _Live()
        self._queue.put((flow, params))
        return None

    @staticmethod
    def _warm_up() -> None:
        """Start Prefect's embedded API (and import validation) now, while the operator logs in and uploads: on a
        fresh ``PREFECT_HOME`` and busy cores the first start takes from seconds to minutes."""
        from prefect import get_client

        from lipline.runner import _warm_validation

        threading.Thread(target=_warm_validation, name="lipline-portal-warm-gx", daemon=True).start()
        try:
            with get_client(sync_client=True) as client:
                client.api_healthcheck()
        except Exception:  # noqa: BLE001 - a warm-up only: the first job starts the API itself and reports errors
            pass

    @staticmethod
    def _run(flow: str, params: LocalizeParams) -> list[str]:
        """Run one job's flow here; its notices. A preview runs with ``resubmit=False``: in-process there is no
        gpu pool to hand it to, so out of memory (or too slow) fails it like any job."""
        from lipline.runner import quiet_expected_failures, run_localize

        if flow == "localize":
            return list(run_localize(params, show_progress=False).notices)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        quiet_expected_failures()
        from lipline.flows.preview import preview

        made = preview(params, resubmit=False)
        return list(made.localize.notices) if made.localize is not None else []

    def _work(self) -> None:
        from lipline.progress import listening

        if self.warm_up:
            self._warm_up()
        while True:
            flow, params = self._queue.get()
            live = self._live[params.job_id]
            live.state = "Running"

            def on_progress(stage: str, fraction: float, live: _Live = live) -> None:
                live.stage, live.progress = stage, fraction

            try:
                with listening(on_progress):
                    notices = self._run(flow, params)
                live.state, live.progress = "Completed", 1.0
                live.message = " ".join(notices)
            except Exception as exc:  # noqa: BLE001 - a job's failure is shown in the job list, never raised here
                problem = user_error(exc)
                live.state, live.message = "Failed", one_line(problem if problem is not None else exc)

    def state(self, record: dict) -> _Live | None:
        return self._live.get(record["job_id"])

    def ui_url(self, flow_run_id: str | None) -> str | None:
        return None  # the embedded API lives inside this process: no UI to link to


class DeploymentRunner:
    """Creates flow runs of the ``localize/localize`` (or ``preview/preview``) deployment on the Prefect API of
    ``PREFECT_API_URL``."""

    mode = "deployment"

    def submit(self, params: LocalizeParams, flow: str = "localize") -> str | None:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        deployment = DEPLOYMENTS[flow]
        try:
            # the key makes a create the client resends after a lost answer return this run, not start a second
            run = run_deployment(deployment, parameters={"params": params.model_dump(mode="json")}, timeout=0,
                                 idempotency_key=f"lipline-portal-{params.job_id}-{secrets.token_hex(8)}")
        except ObjectNotFound as exc:
            raise JobStartError(f"deployment {deployment} not found on {os.environ.get('PREFECT_API_URL')}: "
                                "apply it with `lipline deploy` (or `lipline stack up`)") from exc
        return str(run.id)

    def state(self, record: dict) -> _Live | None:
        from prefect import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
        from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort

        run_id = record.get("flow_run_id")
        if not run_id:
            return None
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            live = _Live(state=run.state.name if run.state else "Scheduled")
            key = "progress-" + record["job_id"].lower().replace(".", "-").replace("_", "-")
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key[:64]])),
                                              sort=ArtifactSort.UPDATED_DESC, limit=1)
            if artifacts and isinstance(artifacts[0].data, (int, float)):
                live.progress = float(artifacts[0].data) / 100
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                                          sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=1)
            if tasks:
                live.stage = tasks[0].name.rsplit("-", 1)[0]
            if run.state and run.state.is_final() and run.state.message:
                live.message = run.state.message
        return live

    def ui_url(self, flow_run_id: str | None) -> str | None:
        from prefect.settings import get_current_settings

        base = get_current_settings().ui_url
        return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base and flow_run_id else None


def make_runner() -> InProcessRunner | DeploymentRunner:
    """The runner ``LIPLINE_PORTAL_RUNNER`` asks for (auto: a deployment when a Prefect API is configured)."""
    choice = get_settings().portal_runner
    if choice == "auto":
        choice = "deployment" if os.environ.get("PREFECT_API_URL") else "in-process"
    return DeploymentRunner() if choice == "deployment" else InProcessRunner()


class Jobs:
    """The portal's jobs: start one, list them, read one."""

    def __init__(self, store: Store, runner: InProcessRunner | DeploymentRunner) -> None:
        self.store, self.runner = store, runner

    def start(self, params: LocalizeParams, *, user: str, draft: str, flow: str = "localize") -> str:
        """Record the job, then hand `flow` (``localize`` or ``preview``) to the runner; returns the job id."""
        if flow not in DEPLOYMENTS:
            raise JobStartError(f"unknown job kind {flow!r}: choose one of {', '.join(DEPLOYMENTS)}")
        if params.job_id is None:
            params = params.model_copy(update={"job_id": new_job_id()})
        key = f"{JOBS}/{params.job_id}.json"
        if self.store.exists(key) and not params.replace:
            raise JobStartError(f"job {params.job_id} was already started from the portal: choose another job id "
                                "or tick 'replace'")
        record = {"job_id": params.job_id, "draft": draft, "user": user, "mode": self.runner.mode, "flow": flow,
                  "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "params": params.model_dump(mode="json"), "flow_run_id": None}
        record["flow_run_id"] = self.runner.submit(params, flow)
        self.store.put_json(record, key)
        return params.job_id

    def records(self) -> list[dict]:
        base = self.store.backend.path(JOBS)
        try:
            names = [p.rsplit("/", 1)[-1] for p in self.store.fs.ls(base, detail=False)]
        except FileNotFoundError:
            return []
        found = [self.store.read_json(f"{JOBS}/{n}") for n in names if n.endswith(".json")]
        return sorted(found, key=lambda r: r["started_at"], reverse=True)

    def record(self, job_id: str) -> dict | None:
        key = f"{JOBS}/{job_id}.json"
        return self.store.read_json(key) if self.store.exists(key) else None

    def view(self, record: dict) -> JobView:
        job_id = record["job_id"]
        view = JobView(job_id=job_id, state="Scheduled", started_at=record["started_at"], user=record["user"],
                       flow_run_id=record.get("flow_run_id"), ui_url=self.runner.ui_url(record.get("flow_run_id")),
                       record=record)
        live = None
        try:
            live = self.runner.state(record)
        except Exception as exc:  # noqa: BLE001 - an unreachable API is shown, not raised: the store still answers
            view.message = f"Prefect API: {one_line(exc)}"
        if live is not None:
            view.state, view.stage, view.progress = live.state, live.stage, live.progress
            view.message = live.message or view.message
        if self.store.exists(f"{job_id}/manifest.json"):
            view.state, view.progress = "Completed", 1.0
        elif self.store.exists(f"{job_id}/status.json"):
            status = self.store.read_json(f"{job_id}/status.json")
            view.state, view.stage = "Failed", status.get("stage") or view.stage
            view.message = "; ".join(status.get("reasons", [])) or view.message
        elif live is None and self.runner.mode == "in-process":
            view.state, view.message = "Unknown", "started by an earlier portal process that has stopped"
        return view
