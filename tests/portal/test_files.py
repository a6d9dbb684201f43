"""A job's files: range requests (206) for the players, whole downloads, fixed names only, presigned S3 URLs."""

from __future__ import annotations

import os

import httpx
import pytest

from lipline.portal.files import presigned_url


@pytest.fixture
def finished_job(logged_in, media):
    """A job record and a final.mp4 in the store, as a completed job leaves them."""
    store = logged_in.store
    draft = logged_in.new_draft()
    assert logged_in.upload(draft, "video", media.video.read_bytes(), "talk.mp4").status_code == 200
    data = os.urandom(300_000)
    (tmp := media.video.parent / "final-bytes.mp4").write_bytes(data)
    store.put_file(tmp, "job1/final.mp4")
    store.put_json({"job_id": "job1", "draft": draft, "user": "alice", "started_at": "2026-11-30T20:00:00+00:00",
                    "mode": "in-process", "params": {"engine": "passthrough"}, "flow_run_id": None},
                   "_portal/jobs/job1.json")
    return data


def test_range_requests_answer_206_with_the_bytes(logged_in, finished_job):
    client, data = logged_in.client, finished_job
    r = client.get("/media/job1/final.mp4", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}" and r.headers["content-length"] == "1000"
    r = client.get("/media/job1/final.mp4", headers={"Range": "bytes=299000-"})
    assert r.status_code == 206 and r.content == data[299000:]
    r = client.get("/media/job1/final.mp4", headers={"Range": "bytes=-500"})
    assert r.status_code == 206 and r.content == data[-500:]
    r = client.get("/media/job1/final.mp4", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = client.get("/media/job1/final.mp4?download=1")
    assert r.status_code == 200 and r.content == data and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"] == 'attachment; filename="job1-final.mp4"'


def test_the_original_is_served_from_the_jobs_upload(logged_in, finished_job, media):
    r = logged_in.client.get("/media/job1/original", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == media.video.read_bytes()[:100]


@pytest.mark.parametrize("path", ["/media/job1/..%2F_portal%2Fjobs%2Fjob1.json", "/media/job1/secret.txt",
                                  "/media/..%2Fetc/final.mp4", "/media/job2/final.mp4", "/jobs/..%2Fjob1",
                                  "/media/job1/report.html"])
def test_only_known_files_of_known_jobs(logged_in, finished_job, path):
    assert logged_in.client.get(path).status_code == 404, path


def test_job_page_links_the_players_and_downloads(logged_in, finished_job):
    page = logged_in.client.get("/jobs/job1")
    assert page.status_code == 200
    assert 'src="/media/job1/original"' in page.text and 'src="/media/job1/final.mp4"' in page.text
    assert 'href="/media/job1/final.mp4?download=1"' in page.text
    assert "Quality report" not in page.text  # no report.html in this job


def test_s3_downloads_are_presigned_urls(s3_env, tmp_path):
    from lipline.store import Store

    store = Store(f"s3://{s3_env.bucket}/presign")
    (src := tmp_path / "f.mp4").write_bytes(b"deliverable bytes")
    store.put_file(src, "job/final.mp4")
    url = presigned_url(store, "job/final.mp4", download_name="job-final.mp4")
    assert url.startswith(s3_env.env()["AWS_ENDPOINT_URL"]) and "Signature=" in url
    r = httpx.get(url)  # no credentials: the signature alone lets the browser download it
    assert r.status_code == 200 and r.content == b"deliverable bytes"
    assert r.headers["content-disposition"] == 'attachment; filename="job-final.mp4"'
    assert presigned_url(Store(str(tmp_path / "local")), "job/final.mp4") is None
