"""The deployed path: `localize/localize` on the `cpu` pool hands lip-sync to `lipsync-segments/gpu` on the `gpu`
pool through the store; the deliverable and its manifest land in S3. Real server, real workers, real S3 API."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import s3fs

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def s3(s3_server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key,
                             client_kwargs={"endpoint_url": s3_server.endpoint}, skip_instance_cache=True)


@pytest.fixture(scope="module")
def submitted(prefect_stack, s3, s3_server, media) -> dict[str, tuple[str, str]]:
    """Both flow runs created up front through the REST API (they run side by side): {case: (job_id, run_id)}."""
    bucket, tag = s3_server.bucket, uuid.uuid4().hex[:8]
    inputs = f"{bucket}/inputs/{tag}"
    s3.put_file(str(media.video), f"{inputs}/talk.mp4")
    s3.put_file(str(media.dub), f"{inputs}/dub.wav")
    s3.pipe_file(f"{inputs}/broken.mp4", b"\x00\x00\x00\x18ftypisom" + b"not really a video" * 64)
    cases = {"good": f"s3://{inputs}/talk.mp4", "bad": f"s3://{inputs}/broken.mp4"}
    runs = {}
    for case, video_uri in cases.items():
        job_id = f"it-{case}-{tag}"
        params = {"video_uri": video_uri, "audio_uri": f"s3://{inputs}/dub.wav", "job_id": job_id,
                  "x264_preset": "ultrafast"}
        runs[case] = (job_id, prefect_stack.create_run("localize", "localize", {"params": params}))
    return runs


def _sha256(s3, path: str) -> str:
    h = hashlib.sha256()
    with s3.open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_localize_runs_lipsync_on_the_gpu_pool_and_archives_to_s3(prefect_stack, submitted, s3):
    job_id, run_id = submitted["good"]
    run = prefect_stack.wait(run_id, RUN_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", (
        f"{run['state_name']}: {run['state'].get('message')}\n{prefect_stack.logs_of(run_id)[-4000:]}\n{prefect_stack.tails()}")
    assert run["work_pool_name"] == "cpu"

    # The GPU hand-off: a `lipsync-segments/gpu` run for this job, executed by the gpu pool's worker.
    gpu_runs = [r for r in prefect_stack.flow_runs_of("lipsync-segments", "gpu")
                if f"/{job_id}/work/synced" in r["parameters"].get("out_prefix", "")]
    assert len(gpu_runs) == 1, [r["parameters"] for r in prefect_stack.flow_runs_of("lipsync-segments", "gpu")]
    assert gpu_runs[0]["work_pool_name"] == "gpu"
    assert gpu_runs[0]["idempotency_key"].startswith(f"lipline-gpu-{job_id}-")  # a resent create returns this run
    assert gpu_runs[0]["state_type"] == "COMPLETED"
    assert gpu_runs[0]["parameters"]["segments"], "the GPU run got no segments"
    assert all(s["video_uri"].startswith("s3://") for s in gpu_runs[0]["parameters"]["segments"])

    job = f"{prefect_stack.store.removeprefix('s3://')}/{job_id}"
    assert s3.exists(f"{job}/final.mp4")
    s3.invalidate_cache()
    leftovers = [k for k in s3.find(f"{job}/work") if not k.endswith("/work")]
    assert not leftovers, f"intermediates handed to the GPU pool must be removed after archiving: {leftovers}"
    assert not s3.exists(f"{job}/status.json")
    manifest = json.loads(s3.cat_file(f"{job}/manifest.json"))
    assert manifest["job_id"] == job_id
    outputs = manifest["outputs"]
    assert "final.mp4" in outputs
    for name, record in outputs.items():
        assert record["uri"] == f"s3://{job}/{name}"
        assert _sha256(s3, f"{job}/{name}") == record["sha256"], name
        assert s3.info(f"{job}/{name}")["size"] == record["bytes"], name


def test_a_bad_input_fails_the_run_and_leaves_status_json(prefect_stack, submitted, s3):
    job_id, run_id = submitted["bad"]
    run = prefect_stack.wait(run_id, RUN_TIMEOUT_S)
    assert run["state_type"] == "FAILED", f"{run['state_name']}\n{prefect_stack.logs_of(run_id)[-3000:]}"

    job = f"{prefect_stack.store.removeprefix('s3://')}/{job_id}"
    status = json.loads(s3.cat_file(f"{job}/status.json"))
    assert status["status"] == "failed" and status["job_id"] == job_id
    assert status["stage"] == "validate", status
    assert status["reasons"]
    assert not s3.exists(f"{job}/final.mp4")
    assert not s3.exists(f"{job}/manifest.json")
    # Nothing was shipped to the GPU pool for a job that failed validation.
    assert not [r for r in prefect_stack.flow_runs_of("lipsync-segments", "gpu")
                if f"/{job_id}/" in r["parameters"].get("out_prefix", "")]
