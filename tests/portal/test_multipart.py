"""Presigned multipart uploads into a real S3 store (SeaweedFS on loopback), driven over HTTP exactly as the
portal's JS does: start → PUT each slice to its presigned URL with httpx → complete. The object equals the file;
a mislabelled file is refused and deleted; an oversize declaration, a wrong CSRF token and a foreign key or role
are refused; a failed upload leaves no multipart upload behind."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from lipline.portal import multipart
from tests.portal.conftest import CSRF, login

MAX_MB = 40.0


@pytest.fixture
def s3_portal(s3_env, users_file, monkeypatch):
    """A logged-in client of a portal on an S3 store, with a 5 MiB part size (S3's minimum) so a small file has
    several parts."""
    from fastapi.testclient import TestClient

    from lipline.portal.app import create_app
    from lipline.portal.jobs import InProcessRunner, Jobs
    from lipline.store import Store

    monkeypatch.setattr(multipart, "PART_SIZE", 5 * 1024 * 1024)
    store = Store(f"s3://{s3_env.bucket}/portal-mp")
    app = create_app(store=store, users_file=users_file, secret="s", max_upload_mb=MAX_MB,
                     jobs=Jobs(store, InProcessRunner(warm_up=False)))
    client = TestClient(app)
    login(client)
    csrf = CSRF.search(client.get("/").text).group(1)
    draft = client.post("/drafts", data={"csrf_token": csrf}, follow_redirects=False).headers["location"][8:]
    return client, csrf, store, draft


def _big_video(media) -> bytes:
    """A real MP4 head followed by filler: 12 MiB and a bit, three parts of 5 MiB."""
    data = media.video.read_bytes()
    return data + bytes(12 * 1024 * 1024 + 12345 - len(data))


def _upload(client, csrf, draft, role, name, data):
    """What portal.js does: start, PUT the slices to the presigned URLs (not through the portal), complete."""
    base = f"/api/drafts/{draft}/{role}/multipart"
    started = client.post(base, json={"name": name, "size": len(data)}, headers={"x-csrf-token": csrf})
    assert started.status_code == 200, started.text
    body = started.json()
    size = body["part_size"]
    etags = []
    for number, url in enumerate(body["parts"]):
        put = httpx.put(url, content=data[number * size:(number + 1) * size])
        assert put.status_code == 200, put.text
        etags.append(put.headers["etag"])
    return body, client.post(f"{base}/complete", json={"upload_id": body["upload_id"], "etags": etags},
                             headers={"x-csrf-token": csrf})


def _pending_uploads(store) -> list[str]:
    from lipline.portal.files import s3_client

    bucket = store.backend.path("x").split("/", 1)[0]
    return [u["Key"] for u in s3_client(public=False).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if "/portal-mp/" in f"/{u['Key']}"]


@pytest.mark.integration
def test_a_video_goes_to_s3_in_presigned_parts_and_is_sniffed(s3_portal, media):
    client, csrf, store, draft = s3_portal
    assert 'data-mode="multipart"' in client.get(f"/drafts/{draft}").text
    data = _big_video(media)
    started, done = _upload(client, csrf, draft, "video", "../../My Talk.mp4", data)
    assert len(started["parts"]) == 3
    assert all(url.split("?")[0].endswith(f"/portal-mp/_portal/uploads/{draft}/video.mp4") for url in started["parts"])
    assert done.status_code == 200, done.text
    assert done.json()["name"] == "My Talk.mp4" and done.json()["size"] == len(data)
    stored = store.fs.cat(store.backend.path(f"_portal/uploads/{draft}/video.mp4"))
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    from lipline.portal.uploads import draft_files

    assert draft_files(store, draft)["video"]["etag"] == done.json()["etag"]
    assert not store.exists(f"_portal/uploads/{draft}/video.pending.json") and _pending_uploads(store) == []

    # a presigned part URL is for its key only: pointed at another key, S3 refuses the signature
    again = client.post(f"/api/drafts/{draft}/video/multipart", json={"name": "t.mp4", "size": 100},
                        headers={"x-csrf-token": csrf}).json()
    forged = again["parts"][0].replace(f"/{draft}/video.mp4", f"/{draft}/audio.wav")
    assert httpx.put(forged, content=b"x" * 100).status_code == 403
    # a new start for the role aborted the upload before it; this one is aborted by the browser's call
    assert client.post(f"/api/drafts/{draft}/video/multipart/abort", json={"upload_id": again["upload_id"]},
                       headers={"x-csrf-token": csrf}).json() == {"aborted": True}
    assert _pending_uploads(store) == []


@pytest.mark.integration
def test_a_mislabelled_file_is_refused_and_deleted(s3_portal, media):
    client, csrf, store, draft = s3_portal
    _, done = _upload(client, csrf, draft, "video", "talk.mp4", media.dub.read_bytes())
    assert done.status_code == 415
    assert done.json()["error"] == ("talk.mp4: the name says an MP4/MOV container (.mp4) but the content is a WAV "
                                    "file; upload the real video file or rename it to match its format")
    assert not store.exists(f"_portal/uploads/{draft}/video.mp4")
    assert not store.exists(f"_portal/uploads/{draft}/video.json") and _pending_uploads(store) == []


@pytest.mark.integration
def test_refusals_before_anything_reaches_s3(s3_portal):
    client, csrf, store, draft = s3_portal
    base = f"/api/drafts/{draft}/video/multipart"
    r = client.post(base, json={"name": "big.mp4", "size": 41 * 1024 * 1024}, headers={"x-csrf-token": csrf})
    assert r.status_code == 413
    assert r.json()["error"] == ("big.mp4: 41.0 MB is over the video limit of 40 MB; shorten or re-encode it "
                                 "(the limit is LIPLINE_PORTAL_MAX_UPLOAD_MB)")
    r = client.post(base, json={"name": "talk.mp4", "size": 100}, headers={"x-csrf-token": "forged"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(base, json={"name": "talk.exe", "size": 100}, headers={"x-csrf-token": csrf})
    assert r.status_code == 400 and r.json()["error"].startswith("talk.exe: a video must be one of")
    for path in (f"/api/drafts/{draft}/..%2Fjobs/multipart", f"/api/drafts/{draft}/secrets/multipart",
                 "/api/drafts/not-a-draft/video/multipart"):
        r = client.post(path, json={"name": "talk.mp4", "size": 100}, headers={"x-csrf-token": csrf})
        assert r.status_code == 404, (path, r.text)
    r = client.post(f"{base}/complete", json={"upload_id": "made-up", "etags": ["x"]}, headers={"x-csrf-token": csrf})
    assert r.status_code == 409 and "start the upload again" in r.json()["error"]
    assert not store.exists(f"_portal/uploads/{draft}") and _pending_uploads(store) == []
