"""`lipline stack up|status|webhook|down` for real, once for the whole module: SeaweedFS, `prefect server`, a cpu
worker and two warm GPU workers (`lipline gpu-worker`, on CPU), the deployments; a job started with the exact
`curl` line `up` printed completes with its deliverable in the S3 store and its segments lip-synced by the GPU
workers; a Prefect automation POSTs to a local HTTP receiver when a
`localize` run completes and when one fails; `down` leaves no process behind."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import s3fs

from lipline import prefect_http
from lipline.stack import CURL_OPTIONS, session_members
from tests.s3server import free_port

pytestmark = pytest.mark.integration

LIPLINE = str(Path(sys.executable).parent / "lipline")
RUN_TIMEOUT_S = 600  # the job itself takes ~2.5 min; a loaded 2-core box has taken over 5
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LIPLINE_", "AWS_"))}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return env


def lipline(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([LIPLINE, *args], env=_env(), capture_output=True, text=True, timeout=timeout)


@dataclass
class Stack:
    dir: Path
    up: subprocess.CompletedProcess
    state: dict

    @property
    def api(self) -> str:
        return self.state["api_url"]

    def s3(self) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(key=self.state["access_key"], secret=self.state["secret_key"],
                                 client_kwargs={"endpoint_url": self.state["s3_endpoint"]}, skip_instance_cache=True)

    def logs(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-chars:]}"
                         for p in sorted((self.dir / "logs").glob("*.log")))

    def wait(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = prefect_http.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()
            if run["state_type"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run_id} still {run['state_type']} after {timeout}s\n{self.logs()}")
            time.sleep(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    folder = tmp_path_factory.mktemp("stack") / "state"
    t0 = time.monotonic()
    up = lipline("stack", "up", "--state-dir", str(folder), "--port", str(free_port()), "--s3-port",
                 str(free_port()), "--gpu-workers", "2", "--cpu-jobs", "2", timeout=600)
    print(f"stack up: {time.monotonic() - t0:.0f} s")
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        yield Stack(folder, up, json.loads((folder / "state.json").read_text()))
    finally:
        lipline("stack", "down", "--state-dir", str(folder), timeout=180)  # no-op once the down test ran


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Receiver.received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                  "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lipline-hook", Receiver.received
    server.shutdown()


def test_up_prints_the_ui_the_store_and_a_curl_line_and_a_second_up_says_so(stack):
    out = stack.up.stdout
    assert f"Prefect UI    {stack.state['ui_url']}" in out
    assert "store         s3://lipline/jobs" in out and stack.state["s3_endpoint"] in out
    assert stack.state["curl"] in out and stack.state["curl"].startswith(f"curl {CURL_OPTIONS} -X POST ")
    assert "Traceback" not in stack.up.stderr
    again = lipline("stack", "up", "--state-dir", str(stack.dir), "--port", str(free_port()))
    assert again.returncode == 0, again.stderr
    assert "stack already up" in again.stdout
    assert json.loads((stack.dir / "state.json").read_text())["processes"] == stack.state["processes"]


def test_status_shows_every_process_the_api_and_the_pools(stack):
    st = lipline("stack", "status", "--state-dir", str(stack.dir), "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    report = json.loads(st.stdout)
    assert report["up"] is True and report["api_healthy"] is True
    assert report["processes"] == {"seaweedfs": True, "server": True, "worker-cpu": True,
                                   "gpu-worker-1": True, "gpu-worker-2": True}
    assert report["gpu_backend"] == "task-workers"
    assert [w["status"] for w in report["pools"]["cpu"]] == ["ONLINE"]
    assert report["pools"]["gpu"] == []  # the pool stays (the deployment backend's), no process worker on it
    serving = {w["identifier"].rsplit("-", 1)[1]: w["task_keys"] for w in report["task_workers"]}
    assert set(serving) == {str(pid) for pid in gpu_worker_pids(stack)}
    assert all(keys and keys[0].startswith("lipsync_on_gpu-") for keys in serving.values()), serving
    pools = {name: prefect_http.get(f"{stack.api}/work_pools/{name}").json() for name in ("cpu", "gpu")}
    assert pools["cpu"]["concurrency_limit"] == 2 and pools["gpu"]["concurrency_limit"] == 2
    text = lipline("stack", "status", "--state-dir", str(stack.dir))
    assert "gpu-worker-2" in text.stdout and "healthy" in text.stdout and "(lipsync_on_gpu)" in text.stdout


def gpu_worker_pids(stack: Stack) -> set[int]:
    return {p["pid"] for p in stack.state["processes"] if p["name"].startswith("gpu-worker-")}


def test_lipline_deploy_applies_prefect_yaml_to_a_running_api_in_place(stack):
    done = lipline("deploy", "--api", stack.api, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"deployed to {stack.api}: ")
    names = done.stdout.split(": ", 1)[1].strip().split(", ")
    assert {"localize/localize", "localize-batch/nightly-batch", "lipsync-segments/gpu"} <= set(names)
    # updated in place: the id in the printed curl line still names localize/localize
    deployment = prefect_http.get(f"{stack.api}/deployments/name/localize/localize").json()
    assert f"/deployments/{deployment['id']}/create_flow_run" in stack.state["curl"]
    assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == \
        "{{ $LIPLINE_CHECKOUT }}"  # not baked in from the deployer's environment


@pytest.fixture(scope="module")
def jobs(stack, receiver):
    """The webhook automation first, then the printed curl line (good job) and a broken input (bad job)."""
    url, _ = receiver
    hook = lipline("stack", "webhook", url, "--state-dir", str(stack.dir))
    assert hook.returncode == 0, hook.stdout + hook.stderr
    curl = shutil.which("curl")
    t0 = time.monotonic()
    if curl:  # the line exactly as printed
        done = subprocess.run(shlex.split(stack.state["curl"]), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        good = json.loads(done.stdout)
    else:  # same request without curl
        args = shlex.split(stack.state["curl"])
        good = prefect_http.post(args[args.index("POST") + 1], content=args[args.index("-d") + 1],
                          headers={"Content-Type": "application/json"}).json()
    s3 = stack.s3()
    tag = uuid.uuid4().hex[:8]
    s3.pipe_file(f"lipline/inputs/{tag}/broken.mp4", b"\x00\x00\x00\x18ftypisom" + b"not a video" * 64)
    deployment = prefect_http.get(f"{stack.api}/deployments/name/localize/localize").json()["id"]
    bad = prefect_http.post(f"{stack.api}/deployments/{deployment}/create_flow_run", json={"parameters": {"params": {
        "video_uri": f"s3://lipline/inputs/{tag}/broken.mp4", "audio_uri": stack.state["samples"]["audio_uri"],
        "job_id": f"bad-{tag}"}}}).json()
    assert "id" in good and "id" in bad, (good, bad)
    return {"good": good["id"], "bad": bad["id"], "bad_job": f"bad-{tag}", "t0": t0}


def test_the_printed_curl_line_runs_a_job_whose_deliverable_lands_in_the_s3_store(stack, jobs):
    run = stack.wait(jobs["good"])
    print(f"job through the stack: {time.monotonic() - jobs['t0']:.0f} s")
    assert run["state_type"] == "COMPLETED", f"{run['state_name']}: {run['state'].get('message')}\n{stack.logs()}"
    assert run["work_pool_name"] == "cpu"
    flow_runs = prefect_http.post(f"{stack.api}/flow_runs/filter", json={}).json()
    assert not [r for r in flow_runs if r["work_pool_name"] == "gpu"]  # no child run: the warm workers did it
    s3 = stack.s3()
    manifests = [k for k in s3.find("lipline/jobs") if k.endswith("/manifest.json")]
    mine = [json.loads(s3.cat_file(k)) for k in manifests]
    mine = [m for m in mine if m["params"]["video_uri"] == stack.state["samples"]["video_uri"]]
    assert len(mine) == 1, manifests
    final = mine[0]["outputs"]["final.mp4"]
    assert final["uri"].startswith("s3://lipline/jobs/") and final["uri"].endswith("/final.mp4")
    assert s3.info(final["uri"].removeprefix("s3://"))["size"] == final["bytes"] > 10_000
    segments = mine[0]["engine"]["segments"]
    assert segments and {s["worker"]["pid"] for s in segments} <= gpu_worker_pids(stack), segments
    assert {s["worker"]["pool"] for s in segments} == {"gpu"}


def _wait_for(received: list[dict], run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for notice in received:
            if notice["body"].get("flow_run_id") == run_id:
                return notice
        time.sleep(0.5)
    pytest.fail(f"no webhook for flow run {run_id} within {timeout}s; received: {received}")


def test_a_webhook_is_posted_when_a_run_completes_and_when_one_fails(stack, jobs, receiver):
    _, received = receiver
    assert stack.wait(jobs["bad"])["state_type"] == "FAILED"
    assert stack.wait(jobs["good"])["state_type"] == "COMPLETED"
    completed = _wait_for(received, jobs["good"])
    failed = _wait_for(received, jobs["bad"])
    assert completed["path"] == "/lipline-hook" and completed["content_type"] == "application/json"
    assert completed["body"]["event"] == "prefect.flow-run.Completed" and completed["body"]["state"] == "Completed"
    assert completed["body"]["flow"] == "localize"
    assert failed["body"]["event"] == "prefect.flow-run.Failed" and failed["body"]["job_id"] == jobs["bad_job"]
    assert {n["body"]["flow"] for n in received} == {"localize"}


def test_down_stops_everything_and_leaves_no_process(stack):
    pids = [p["pid"] for p in stack.state["processes"]]
    t0 = time.monotonic()
    down = lipline("stack", "down", "--state-dir", str(stack.dir), timeout=180)
    print(f"stack down: {time.monotonic() - t0:.0f} s")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stack down" in down.stdout
    names = [line.split()[0] for line in down.stdout.splitlines() if " pid " in line]
    assert sorted(names[:3]) == ["gpu-worker-1", "gpu-worker-2", "worker-cpu"] and names[3:] == ["server", "seaweedfs"]
    for pid in pids:  # each process led its own session; its flow-run children stayed in it
        assert session_members(pid) == [], f"processes left in session {pid}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{stack.api}/health", timeout=3)
    st = lipline("stack", "status", "--state-dir", str(stack.dir))
    assert st.returncode == 1 and "no stack" in st.stdout
    assert not (stack.dir / "state.json").exists() and not (stack.dir / "stack.env").exists()
