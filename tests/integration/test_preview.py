"""`preview/preview` on the `laptop` pool, for real: a preview that fits is made on the laptop (≤ 512 px, ≤ 30 s);
one that runs out of GPU memory, and one slower than LIPLINE_PREVIEW_MAX_SLOWDOWN, stop, resubmit themselves to
`preview/preview-gpu` (the `gpu` pool), which makes the preview; the laptop run ends "Resubmitted" and says why
in its log and artifact. The laptop's small GPU is played by the bench-only `bench-fixed-cost` engine, through
the flow run's own environment (job variables), so the three runs share one laptop worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import av
import pytest
import s3fs

from lipline import PREFECT_ENV_DEFAULTS
from lipline.samples import speech_like, talking_video, write_audio
from tests.integration.conftest import ROOT
from tests.prefect_server import PREFECT, stop_processes

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 600  # a bound for a stuck run, not a speed check (2 loaded cores)
FAULTS = {  # what each case's laptop run sees (merged over the deployment's job env by the worker)
    "fits": {},
    "oom": {"LIPLINE_BENCH_OOM_ABOVE_FRAMES": "1"},  # every segment is too big for this "GPU"
    "slow": {"LIPLINE_BENCH_SECONDS_PER_FRAME": "0.08", "LIPLINE_PREVIEW_MAX_SLOWDOWN": "1.0"},  # 2x real time at 25 fps
}


@pytest.fixture(scope="module")
def laptop_worker(prefect_stack, s3_server, tmp_path_factory):
    """One process worker on the `laptop` pool, configured like an operator's laptop (same API and store)."""
    home = tmp_path_factory.mktemp("laptop-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LIPLINE_"))}
    env.update({"PREFECT_HOME": str(home), "PREFECT_API_URL": prefect_stack.api, **PREFECT_ENV_DEFAULTS,
                "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "INFO",
                "LIPLINE_STORE": prefect_stack.store, "LIPLINE_CHECKOUT": str(ROOT), **s3_server.env(),
                "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"})
    with open(prefect_stack.logs / "worker-laptop.log", "wb") as out:
        proc = subprocess.Popen([PREFECT, "worker", "start", "--pool", "laptop", "--name", "it-laptop"], env=env,
                                cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prefect_stack.processes["worker-laptop"] = proc
    try:
        yield proc
    finally:
        prefect_stack.processes.pop("worker-laptop", None)
        stop_processes([proc])


@pytest.fixture(scope="module")
def s3(s3_server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key,
                             client_kwargs={"endpoint_url": s3_server.endpoint}, skip_instance_cache=True)


@pytest.fixture(scope="module")
def previews(prefect_stack, laptop_worker, s3, s3_server, media, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """The three laptop runs, created up front (they run side by side): {case: (job_id, flow run id)}."""
    d = tmp_path_factory.mktemp("preview-media")
    video = talking_video(d / "talk720.mp4", media.face, 6.0, width=1280, height=720)  # 720p: scaled to 910x512
    dub = write_audio(d / "dub.wav", speech_like(6.0, pauses=((1.2, 1.5), (2.6, 2.9), (4.0, 4.3))))
    tag = uuid.uuid4().hex[:8]
    inputs = f"{s3_server.bucket}/inputs/preview-{tag}"
    s3.put_file(str(video), f"{inputs}/talk.mp4")
    s3.put_file(str(dub), f"{inputs}/dub.wav")
    runs = {}
    for case, faults in FAULTS.items():
        job_id = f"pv-{case}-{tag}"
        params = {"video_uri": f"s3://{inputs}/talk.mp4", "audio_uri": f"s3://{inputs}/dub.wav", "job_id": job_id,
                  "engine": "bench-fixed-cost", "max_segment_s": 1.5, "x264_preset": "ultrafast",
                  "recompute": True}  # same inputs in every case: no segment may come from another's cache
        runs[case] = (job_id, prefect_stack.create_run("preview", "preview", {"params": params},
                                                       job_variables={"env": faults}))
    return runs


def _deliverable(s3, prefect_stack, job_id: str, tmp_path: Path) -> tuple[int, int, float, dict]:
    job = f"{prefect_stack.store.removeprefix('s3://')}/{job_id}"
    local = tmp_path / f"{job_id}.mp4"
    s3.get_file(f"{job}/final.mp4", str(local))
    with av.open(str(local)) as c:
        seconds = float(c.duration / av.time_base)
        width, height = c.streams.video[0].width, c.streams.video[0].height
    return width, height, seconds, json.loads(s3.cat_file(f"{job}/manifest.json"))


def _finished(prefect_stack, run_id: str) -> dict:
    run = prefect_stack.wait(run_id, RUN_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", (f"{run['state_name']}: {run['state'].get('message')}\n"
                                              f"{prefect_stack.logs_of(run_id)[-4000:]}\n{prefect_stack.tails()}")
    return run


def test_a_preview_that_fits_is_made_on_the_laptop(prefect_stack, previews, s3, tmp_path):
    job_id, run_id = previews["fits"]
    run = _finished(prefect_stack, run_id)
    assert run["work_pool_name"] == "laptop" and run["state_name"] == "Completed"
    width, height, seconds, manifest = _deliverable(s3, prefect_stack, job_id, tmp_path)
    assert min(width, height) == 512 and (width, height) == (910, 512)  # 1280x720 scaled, short side 512
    assert seconds == pytest.approx(6.0, abs=0.1) and seconds <= 30
    assert manifest["engine"]["name"] == "bench-fixed-cost"
    assert any(n.startswith("preview: 910x512") for n in manifest["engine"]["notices"]), manifest["engine"]["notices"]
    gpu_previews = [r for r in prefect_stack.flow_runs_of("preview", "preview-gpu")
                    if r["parameters"]["params"]["job_id"] == job_id]
    assert not gpu_previews, "a preview that fits must not be resubmitted"


def _eventually(read, done, timeout: float = 90.0):
    """`read()` until `done(value)` or `timeout`: a run's last log lines and artifacts reach the API a little after
    its final state (the log worker flushes in batches; a loaded SQLite API answers late)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(1)


def _artifact(prefect_stack, run_id: str) -> dict:
    def read() -> list:
        r = prefect_stack.client.post("/artifacts/filter", json={"artifacts": {
            "flow_run_id": {"any_": [run_id]}, "key": {"any_": ["preview-resubmitted"]}}})
        r.raise_for_status()
        return r.json()

    found = _eventually(read, lambda value: len(value) >= 1)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("case, reason", [("oom", "out of GPU memory"), ("slow", "too slow")])
def test_a_preview_the_laptop_cannot_make_is_resubmitted_to_the_gpu_pool(prefect_stack, previews, s3, tmp_path, case,
                                                                         reason):
    job_id, run_id = previews[case]
    laptop = _finished(prefect_stack, run_id)
    assert laptop["work_pool_name"] == "laptop"
    assert laptop["state_name"] == "Resubmitted", laptop["state"]
    message = laptop["state"]["message"]
    new_id = re.search(r"\(([0-9a-f-]{36})\)$", message).group(1)
    assert message.startswith(f"{reason} on this machine: resubmitted to preview/preview-gpu")

    logs = _eventually(lambda: prefect_stack.logs_of(run_id), lambda text: new_id in text)
    assert f"stopped here, {reason}" in logs and "Resubmitted to preview/preview-gpu as flow run" in logs
    assert new_id in logs
    artifact = _artifact(prefect_stack, run_id)
    assert artifact["type"] == "markdown" and f"**{reason}**" in artifact["data"] and new_id in artifact["data"]
    if case == "slow":  # stopped as it went, with lip-sync work left, the figures over the limit
        done = float(re.search(r"\| video_s_done \| ([0-9.]+) \|", artifact["data"]).group(1))
        total = float(re.search(r"\| video_s_total \| ([0-9.]+) \|", artifact["data"]).group(1))
        slowdown = float(re.search(r"\| slowdown \| ([0-9.]+) \|", artifact["data"]).group(1))
        assert 0 < done < total and slowdown > 1.0
    else:
        assert "bench: simulated out of memory" in artifact["data"]

    gpu = _finished(prefect_stack, new_id)
    assert gpu["work_pool_name"] == "gpu" and gpu["parameters"]["resubmit"] is False
    resubmitted = [r for r in prefect_stack.flow_runs_of("preview", "preview-gpu")
                   if r["parameters"]["params"]["job_id"] == job_id]
    assert [r["id"] for r in resubmitted] == [new_id], "one resubmission per laptop run (idempotency key)"
    assert gpu["parameters"]["params"]["job_id"] == job_id
    assert gpu["parent_task_run_id"], "the gpu run is linked to the laptop run in the UI"
    width, height, seconds, manifest = _deliverable(s3, prefect_stack, job_id, tmp_path)
    assert (width, height) == (910, 512) and seconds == pytest.approx(6.0, abs=0.1)
    assert manifest["job_id"] == job_id
