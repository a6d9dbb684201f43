"""A real multi-process Lipline deployment on loopback, once per test session.

`prefect server start` (own PREFECT_HOME, analytics off) -> work pools `cpu` and `gpu` (type process) ->
`prefect deploy --all --prefect-file deployments/prefect.yaml` (the real file, from this checkout) -> one
`prefect worker start` per pool, polling every second, with the store in SeaweedFS (`s3_server`).
Teardown: SIGINT to the workers, then the server.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lipline import PREFECT_ENV_DEFAULTS
from lipline.prefect_http import api_client
from tests.prefect_server import PREFECT, start_prefect_server, stop_processes

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class PrefectStack:
    api: str
    client: httpx.Client
    logs: Path
    store: str                      # LIPLINE_STORE of the workers: s3://<bucket>/jobs
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def deployment_id(self, flow_name: str, deployment_name: str) -> str:
        r = self.client.get(f"/deployments/name/{flow_name}/{deployment_name}")
        r.raise_for_status()
        return r.json()["id"]

    def create_run(self, flow_name: str, deployment_name: str, parameters: dict, *,
                   job_variables: dict | None = None, timeout: float = 300.0) -> str:
        """Create a run of the deployment; its flow run id.

        The request carries an idempotency key, so a read that times out on a loaded machine (CI saw the SQLite
        API take over 30 s to answer) is sent again without making a second run: the API answers the first.
        """
        deployment = self.deployment_id(flow_name, deployment_name)
        body = {"parameters": parameters, "idempotency_key": uuid.uuid4().hex}
        if job_variables:
            body["job_variables"] = job_variables
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = self.client.post(f"/deployments/{deployment}/create_flow_run", json=body)
                break
            except httpx.TimeoutException:
                if time.monotonic() > deadline:
                    raise
        r.raise_for_status()
        return r.json()["id"]

    def flow_run(self, run_id: str) -> dict:
        r = self.client.get(f"/flow_runs/{run_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                run = self.flow_run(run_id)
            except httpx.TimeoutException:  # an API slowed down by a loaded machine: a read is safe to repeat
                if time.monotonic() > deadline:
                    raise
                continue
            if run["state_type"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run_id} still {run['state_type']} after {timeout:.0f}s\n{self.tails()}")
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}\n{self.tails()}")
            time.sleep(0.5)

    def flow_runs_of(self, flow_name: str, deployment_name: str) -> list[dict]:
        r = self.client.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [self.deployment_id(flow_name, deployment_name)]}}})
        r.raise_for_status()
        return r.json()

    def logs_of(self, run_id: str) -> str:
        r = self.client.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        return "\n".join(entry["message"] for entry in r.json()) if r.is_success else r.text

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(self.logs.glob("*.log")))


def _create_pools(client: httpx.Client) -> None:
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    for name in ("cpu", "gpu", "laptop"):  # laptop: the preview deployment's pool (tests/integration/test_preview.py)
        r = client.post("/work_pools/", json={"name": name, "type": "process", "base_job_template": template})
        if r.status_code != 409:  # 409: already there
            r.raise_for_status()


@pytest.fixture(scope="package")  # torn down right after tests/integration's stack tests, which run first
def prefect_stack(s3_server, tmp_path_factory) -> PrefectStack:
    base = tmp_path_factory.mktemp("prefect-stack")
    logs = base / "logs"
    logs.mkdir()
    store = f"s3://{s3_server.bucket}/jobs"
    server = start_prefect_server(base / "prefect-home", logs / "server.log")
    api = server.api
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LIPLINE_"))}
    env.update({
        "PREFECT_HOME": str(base / "prefect-home"), "PREFECT_API_URL": api,
        **PREFECT_ENV_DEFAULTS,
        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "INFO",
        "LIPLINE_STORE": store, **s3_server.env(),
    })
    processes: dict[str, subprocess.Popen] = {}

    def spawn(name: str, args: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "wb")
        processes[name] = subprocess.Popen([PREFECT, *args], env={**env, **(extra or {})}, cwd=base, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        return processes[name]

    # retries the 503 a busy server answers (SQLite "database is locked"); reads wait up to 120 s for a loaded one
    client = api_client(api, timeout=120)
    stack = PrefectStack(api, client, logs, store, processes)
    try:
        _create_pools(client)
        # Deploy the real prefect.yaml from the checkout; LIPLINE_CHECKOUT is absent from this env so the
        # pull step keeps `{{ $LIPLINE_CHECKOUT }}` for the workers to resolve.
        deploy = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        (logs / "deploy.log").write_text(deploy.stdout + deploy.stderr)
        if deploy.returncode:
            raise RuntimeError(f"prefect deploy failed:\n{(deploy.stdout + deploy.stderr)[-4000:]}")
        worker_env = {"LIPLINE_CHECKOUT": str(ROOT), "LIPLINE_GPU_DEPLOYMENT": "lipsync-segments/gpu",
                      "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
        spawn("worker-cpu", ["worker", "start", "--pool", "cpu", "--name", "it-cpu"], worker_env)
        # a preview resubmitted to the gpu pool is the last stop: it must finish however slow this machine is (CI saw
        # one fail as "too slow" on two loaded cores); a limit no run can meet makes that certain to be tested
        spawn("worker-gpu", ["worker", "start", "--pool", "gpu", "--name", "it-gpu", "--limit", "1"],
              {**worker_env, "LIPLINE_PREVIEW_MAX_SLOWDOWN": "0.001"})
        yield stack
    finally:
        client.close()
        stop_processes(processes.values())  # workers first, all at once; then the server
        server.stop()
