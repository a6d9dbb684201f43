"""The new-job page: check shows every violation with its hint; start is refused until a check of exactly the
current files passed, and on bad parameters (one line per field)."""

from __future__ import annotations

import pytest

from tests import media_factory as mf


@pytest.fixture(scope="module")
def phone_dub(tmp_path_factory):
    d = tmp_path_factory.mktemp("phone")
    return mf.write_audio(d / "phone.wav", mf.speech_like(3.0, sr=8000), sr=8000)


def test_check_lists_every_violation_and_start_waits_for_a_clean_check(logged_in, media, phone_dub):
    client, csrf = logged_in.client, logged_in.csrf
    draft = logged_in.new_draft()
    r = client.post(f"/drafts/{draft}/start", data={"csrf_token": csrf, "engine": "passthrough"})
    assert r.status_code == 400 and "upload the video and the audio first" in r.text
    assert logged_in.upload(draft, "video", media.video.read_bytes(), "talk.mp4").status_code == 200
    assert logged_in.upload(draft, "audio", phone_dub.read_bytes(), "phone.wav").status_code == 200
    r = client.post(f"/drafts/{draft}/start", data={"csrf_token": csrf, "engine": "passthrough"})
    assert r.status_code == 400 and "check the files first" in r.text

    page = client.post(f"/drafts/{draft}/check", data={"csrf_token": csrf})  # faces unticked: no face rules
    assert page.status_code == 200
    assert "audio: phone.wav" in page.text and "[fail] audio.sample_rate</b>: observed 8000 Hz, expected &gt;= 16000 Hz" in page.text
    assert "telephone-band audio cannot be restored" in page.text  # the hint
    assert "[fail] audio.duration" in page.text
    assert "video: talk.mp4 — <span class=\"verdict\">pass</span>" in page.text
    r = client.post(f"/drafts/{draft}/start", data={"csrf_token": csrf, "engine": "passthrough"})
    assert r.status_code == 400 and "the check found failures" in r.text

    # a new dub makes the last check stale; a clean check lets bad parameters through to the form's own checks
    assert logged_in.upload(draft, "audio", media.dub.read_bytes(), "dub.wav").status_code == 200
    assert "Not checked yet" in client.get(f"/drafts/{draft}").text
    page = client.post(f"/drafts/{draft}/check", data={"csrf_token": csrf})
    assert "audio.sample_rate" not in page.text and "audio: dub.wav" in page.text
    r = client.post(f"/drafts/{draft}/start", data={"csrf_token": csrf, "engine": "passthrough", "crf": "99",
                                                     "contract_overrides": "not-a-rule=3"})
    assert r.status_code == 400
    assert "crf: Input should be less than or equal to 51" in r.text
    assert "unknown contract override key(s) not-a-rule" in r.text
    assert 'value="99"' in r.text  # the operator's values stay in the form
    assert logged_in.client.get("/api/jobs").json() == []


def test_the_form_renders_every_parameter_with_default_and_description(logged_in):
    from markupsafe import escape

    from lipline.portal.forms import form_fields

    page = logged_in.client.get(f"/drafts/{logged_in.new_draft()}").text
    fields = form_fields()
    assert {"engine", "lipsync.steps", "quality_gate.on_fail", "loudness_lufs", "crf"} <= {f.name for f in fields}
    for field in fields:
        assert f'name="{field.name}"' in page and str(escape(field.description)) in page
    assert 'name="lipsync.steps" value="20"' in page and "<option selected>veryfast</option>" in page
    assert 'name="video_uri"' not in page and 'name="store"' not in page  # the portal sets these itself



def test_the_start_form_offers_a_preview_and_refuses_an_unknown_kind(logged_in, media):
    import html
    import re

    client, csrf = logged_in.client, logged_in.csrf
    draft = logged_in.new_draft()
    assert logged_in.upload(draft, "video", media.video.read_bytes(), "talk.mp4").status_code == 200
    assert logged_in.upload(draft, "audio", media.dub.read_bytes(), "dub.wav").status_code == 200
    page = client.get(f"/drafts/{draft}").text
    assert '<option value="localize" selected>' in page and '<option value="preview" >' in page
    page = client.post(f"/drafts/{draft}/check", data={"csrf_token": csrf})
    assert "[fail]" not in page.text, re.findall(r"\[fail\][^<]*</b>[^<]*", page.text)
    r = client.post(f"/drafts/{draft}/start", data={"csrf_token": csrf, "engine": "passthrough", "flow": "nope"})
    error = html.unescape(re.search(r'<p class="error" id="error">([^<]*)</p>', r.text).group(1))
    assert (r.status_code, error) == (400, "unknown job kind 'nope': choose one of localize, preview")
    assert client.get("/api/jobs").json() == []
