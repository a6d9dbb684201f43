"""Secrets never leak: a real job with known secret values, then every place they could end up is searched.

The job runs through `lipline run` against a real Prefect server with API auth on (`PREFECT_API_AUTH_STRING`), a
real SeaweedFS S3 store whose credentials are enforced (`LIPLINE_S3_SECRET_ACCESS_KEY`), with decoy values in the
other secret-like variables (`AWS_SECRET_ACCESS_KEY`, `LIPLINE_PORTAL_SECRET`). None of the values, raw or
base64-encoded, may appear in: the CLI's stdout/stderr; the server's logs, artifacts, flow runs (parameters,
state messages), task runs, events, variables and blocks (read through the API); any file of the server's and
the client's `PREFECT_HOME` (the SQLite database included); any object in the store (manifest.json, report.html,
the deliverable, ...).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import s3fs

from lipline.prefect_http import api_client
from tests import media_factory as mf
from tests.prefect_server import start_prefect_server
from tests.s3server import start_seaweedfs

pytestmark = pytest.mark.integration

BUCKET = "secrets"


def _variants(value: str) -> list[bytes]:
    """The value as bytes, and base64-encoded (an Authorization header, a serialized blob)."""
    raw = value.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def find_secrets(secret_values: dict[str, str], places: dict[str, bytes]) -> list[str]:
    """'NAME in PLACE' for every secret found in a place (the values themselves are never printed)."""
    return [f"{name} in {where}" for where, data in places.items() for name, value in secret_values.items()
            if any(v in data for v in _variants(value))]


def _all(client: httpx.Client, path: str, body: dict | None = None, page: int = 200) -> list[dict]:
    """Every object a Prefect `/…/filter` endpoint returns, page by page."""
    found, offset = [], 0
    while True:
        r = client.post(path, json={**(body or {}), "limit": page, "offset": offset})
        r.raise_for_status()
        batch = r.json()
        found += batch
        if len(batch) < page:
            return found
        offset += page


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """One completed job with known secrets; yields what to search."""
    base = tmp_path_factory.mktemp("secrets")
    known = {"LIPLINE_S3_SECRET_ACCESS_KEY": "s3-" + secrets.token_urlsafe(24),
             "AWS_SECRET_ACCESS_KEY": "aws-" + secrets.token_urlsafe(24),
             "PREFECT_API_AUTH_STRING": "ops:" + secrets.token_urlsafe(18),
             "LIPLINE_PORTAL_SECRET": "portal-" + secrets.token_urlsafe(24)}
    s3 = start_seaweedfs(base / "seaweed", bucket=BUCKET, access_key="lipline-" + secrets.token_hex(4),
                         secret_key=known["LIPLINE_S3_SECRET_ACCESS_KEY"])
    server = None
    try:
        server = start_prefect_server(base / "server-home", base / "server.log",
                                      env={"PREFECT_SERVER_API_AUTH_STRING": known["PREFECT_API_AUTH_STRING"]})
        fs = s3fs.S3FileSystem(key=s3.access_key, secret=s3.secret_key, client_kwargs={"endpoint_url": s3.endpoint},
                               skip_instance_cache=True)
        face = mf.face_png(base / "face.png")
        video = mf.talking_video(base / "talk.mp4", face, 5.5,
                                 audio=mf.write_audio(base / "orig.wav", mf.speech_like(5.5, seed=3)))
        dub = mf.write_audio(base / "dub.wav", mf.speech_like(5.8))
        for path in (video, dub):
            fs.put_file(str(path), f"{BUCKET}/inputs/{path.name}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LIPLINE_", "AWS_"))}
        env.update(known)
        env.update({"PREFECT_API_URL": server.api, "PREFECT_HOME": str(base / "client-home"),
                    "PREFECT_LOGGING_LEVEL": "INFO", "LIPLINE_S3_ENDPOINT_URL": s3.endpoint,
                    "LIPLINE_S3_ACCESS_KEY_ID": s3.access_key, "AWS_ACCESS_KEY_ID": "decoy-" + secrets.token_hex(4)})
        done = subprocess.run([sys.executable, "-m", "lipline.cli", "run", f"s3://{BUCKET}/inputs/talk.mp4",
                               f"s3://{BUCKET}/inputs/dub.wav", "--engine", "passthrough", "--store",
                               f"s3://{BUCKET}/jobs", "--job-id", "secret-job", "--preset", "ultrafast"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        yield {"known": known, "cli": done, "api": server.api, "server": server, "fs": fs, "base": base}
    finally:
        if server is not None:
            server.stop()
        s3.stop()


def test_the_job_really_used_the_secrets(job):
    manifest = json.loads(job["fs"].cat_file(f"{BUCKET}/jobs/secret-job/manifest.json"))
    assert manifest["outputs"]["final.mp4"]["uri"] == f"s3://{BUCKET}/jobs/secret-job/final.mp4"
    assert httpx.get(f"{job['api']}/flow_runs/filter", timeout=10).status_code in (401, 405)  # auth is on
    user, password = job["known"]["PREFECT_API_AUTH_STRING"].split(":", 1)
    with api_client(job["api"], auth_string=f"{user}:{password}") as client:
        assert _all(client, "/flow_runs/filter"), "the job left no flow run in the Prefect server"


def test_no_secret_is_in_the_cli_output_the_prefect_server_or_the_store(job):
    user, password = job["known"]["PREFECT_API_AUTH_STRING"].split(":", 1)
    places = {"CLI stdout": job["cli"].stdout.encode(), "CLI stderr": job["cli"].stderr.encode()}
    with api_client(job["api"], auth_string=f"{user}:{password}") as client:
        logs = _all(client, "/logs/filter")
        assert any("secret-job" in log["message"] for log in logs), "the run's logs did not reach the server"
        places["Prefect logs"] = json.dumps(logs).encode()
        for what in ("artifacts", "flow_runs", "task_runs", "variables", "deployments", "flows"):
            places[f"Prefect {what}"] = json.dumps(_all(client, f"/{what}/filter")).encode()
        blocks = client.post("/block_documents/filter", json={"include_secrets": True})
        blocks.raise_for_status()
        places["Prefect blocks"] = blocks.content
        events = client.post("/events/filter", json={"limit": 50})
        events.raise_for_status()
        page = events.json()
        assert page["events"], "no events recorded"
        while True:
            places[f"Prefect events page {len(places)}"] = json.dumps(page["events"]).encode()
            if not page.get("next_page"):
                break
            page = client.get(page["next_page"]).json()
    job["server"].stop()  # the database file as it is on disk once the server has flushed and closed it
    places.update(_files(job["base"] / "server-home"))
    places.update(_files(job["base"] / "client-home"))
    places["server's own log"] = (job["base"] / "server.log").read_bytes()
    objects = [key for key in job["fs"].find(BUCKET) if not key.startswith(f"{BUCKET}/inputs/")]
    assert f"{BUCKET}/jobs/secret-job/manifest.json" in objects and \
        any(key.endswith("report.html") for key in objects), objects
    places.update({f"store {key}": job["fs"].cat_file(key) for key in objects})
    assert any(p.endswith("prefect.db") for p in places), sorted(places)
    leaks = find_secrets(job["known"], places)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)


def test_the_search_finds_a_secret_wherever_it_is(job):
    """The search itself can fail: a value hidden raw, base64-encoded or in the middle of binary data is found."""
    value = job["known"]["LIPLINE_S3_SECRET_ACCESS_KEY"]
    places = {"plain": b"...", "raw": b"\x00\x01" + value.encode() + b"\xff",
              "header": b"Authorization: Basic " + base64.b64encode(value.encode())}
    assert find_secrets({"S3": value}, places) == ["S3 in raw", "S3 in header"]
