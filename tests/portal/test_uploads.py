"""Uploads: streamed into the store under keys the server makes; traversal names, oversized and mislabelled files
refused with clear messages; the same route into a real S3 store (SeaweedFS)."""

from __future__ import annotations

import hashlib
import os

import pytest

from lipline.portal import uploads
from lipline.portal.uploads import UploadRefused, check_content, sniff


def test_sniffing_knows_containers_and_text(media):
    assert sniff(media.video.read_bytes()[:4096]) == "mp4"
    assert sniff(media.dub.read_bytes()[:4096]) == "wav"
    assert sniff(b"1\n00:00:01,000 --> 00:00:02,000\nhi\n") == "text"
    assert sniff(b"") == "empty"
    check_content("subtitles", "s.srt", ".srt", media.subtitles.read_bytes()[:4096])
    with pytest.raises(UploadRefused, match=r"talk\.mp4: the name says an MP4/MOV container \(\.mp4\) but the "
                                            r"content is a WAV file"):
        check_content("video", "talk.mp4", ".mp4", media.dub.read_bytes()[:4096])


def test_a_good_video_lands_under_a_server_made_key(logged_in, media):
    draft = logged_in.new_draft()
    r = logged_in.upload(draft, "video", media.video.read_bytes(), "My Talk (final).MP4")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sha256"] == hashlib.sha256(media.video.read_bytes()).hexdigest()
    key = f"_portal/uploads/{draft}/video.mp4"
    assert logged_in.store.exists(key)
    assert body["name"] == "My Talk (final).MP4"  # shown back, never used as a key


@pytest.mark.parametrize("name", ["../../../etc/evil.mp4", "..\\..\\evil.mp4", "/abs/path/evil.mp4", "%2e%2e%2fevil.mp4"])
def test_traversal_file_names_never_reach_the_store(logged_in, media, name, tmp_path):
    draft = logged_in.new_draft()
    r = logged_in.upload(draft, "video", media.video.read_bytes(), name)
    assert r.status_code == 200, r.text
    root = logged_in.store.backend.base
    written = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    assert written == [f"_portal/uploads/{draft}/video.json", f"_portal/uploads/{draft}/video.mp4"]
    assert not list(tmp_path.parent.glob("evil*"))


@pytest.mark.parametrize("path", ["/api/drafts/..%2F..%2Fetc/video", "/api/drafts/d-0123456789abcdef/..%2Fjobs",
                                  "/api/drafts/d-0123456789abcdef/secrets", "/api/drafts/not-a-draft/video"])
def test_traversal_in_draft_or_role_is_refused(logged_in, media, path):
    r = logged_in.client.put(path, content=media.video.read_bytes()[:10000],
                             headers={"x-csrf-token": logged_in.csrf, "x-file-name": "a.mp4"})
    assert r.status_code == 404, (path, r.status_code, r.text)
    assert not logged_in.store.exists("_portal/uploads")


def test_oversized_uploads_are_refused_with_the_limit(logged_in, media):
    draft = logged_in.new_draft()
    big = media.video.read_bytes()[:4096] + os.urandom(4_400_000)  # limit in this app: 4 MB
    r = logged_in.upload(draft, "video", big, "big.mp4")
    assert r.status_code == 413
    assert r.json()["error"] == ("big.mp4: 4.2 MB is over the video limit of 4 MB; shorten or re-encode it "
                                 "(the limit is LIPLINE_PORTAL_MAX_UPLOAD_MB)")

    def chunks():  # no Content-Length: the limit is enforced while the bytes stream in
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    r = logged_in.client.put(f"/api/drafts/{draft}/video", content=chunks(),
                             headers={"x-csrf-token": logged_in.csrf, "x-file-name": "big.mp4"})
    assert r.status_code == 413 and "larger than the video limit of 4 MB" in r.json()["error"]
    assert uploads.draft_files(logged_in.store, draft) == {}
    assert not logged_in.store.exists(f"_portal/uploads/{draft}/video.mp4")


@pytest.mark.parametrize("role,name,data,status,message", [
    ("video", "talk.mp4", b"this is only text, not a video\n" * 20, 415,
     "talk.mp4: the name says an MP4/MOV container (.mp4) but the content is text; upload the real video file or "
     "rename it to match its format"),
    ("audio", "dub.wav", b"\x00\x01binary" * 100, 415, "dub.wav: the name says a WAV file (.wav) but the content is"),
    ("subtitles", "subs.srt", b"\x00\x01\x02binary" * 100, 400, "subs.srt: this is not SRT, ASS or VTT text"),
    ("video", "talk.exe", b"MZ", 400, "talk.exe: a video must be one of .avi, .m4v, .mkv, .mov, .mp4, .webm"),
    ("audio", "empty.wav", b"", 400, "empty.wav: the file is empty"),
])
def test_mislabelled_or_wrong_type_uploads_are_refused(logged_in, role, name, data, status, message):
    draft = logged_in.new_draft()
    r = logged_in.upload(draft, role, data, name)
    assert r.status_code == status and r.json()["error"].startswith(message), r.text
    assert uploads.draft_files(logged_in.store, draft) == {}


def test_uploads_stream_into_an_s3_store(s3_env, users_file, media):
    from fastapi.testclient import TestClient

    from lipline.portal.app import create_app
    from lipline.portal.jobs import InProcessRunner, Jobs
    from lipline.store import Store
    from tests.portal.conftest import CSRF, login

    store = Store(f"s3://{s3_env.bucket}/portal-test")
    app = create_app(store=store, users_file=users_file, secret="s",
                     jobs=Jobs(store, InProcessRunner(warm_up=False)))
    client = TestClient(app)
    login(client)
    token = CSRF.search(client.get("/").text).group(1)
    draft = client.post("/drafts", data={"csrf_token": token}, follow_redirects=False).headers["location"][8:]
    r = client.put(f"/api/drafts/{draft}/audio", content=media.dub.read_bytes(),
                   headers={"x-csrf-token": token, "x-file-name": "dub.wav"})
    assert r.status_code == 200, r.text
    stored = store.fs.cat(f"{s3_env.bucket}/portal-test/_portal/uploads/{draft}/audio.wav")
    assert hashlib.sha256(stored).hexdigest() == r.json()["sha256"] == hashlib.sha256(media.dub.read_bytes()).hexdigest()
