"""The face rules of the video contract: one face, big enough, and who is chosen when there are several."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lipline.tasks.validate import validate_file
from tests.models.face import clips

SIZE = (640, 360)  # 360p: the short-side rule passes, so only face rules can fire


def clip(path, at, seconds=2.0, size=SIZE):
    return clips.write_clip(path, clips.timeline(seconds, at), size=size)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("face-contract")
    cat = clips.cv2.resize(clips.portrait("cat").rgb, SIZE)
    return {
        "one": clip(d / "one.mp4", lambda t: [clips.Sprite("astronaut", 320, 170, 140)]),
        "two": clip(d / "two.mp4", lambda t: [clips.Sprite("astronaut", 180, 170, 130),
                                              clips.Sprite("grace", 460, 180, 110)]),
        "small": clip(d / "small.mp4", lambda t: [clips.Sprite("astronaut", 240, 320, 40)], size=(480, 640)),  # portrait phone shot
        "cat": clips.write_clip(d / "cat.mp4", [cat] * 40, size=SIZE),
        "away": clip(d / "away.mp4", lambda t: [clips.Sprite("astronaut", 320 if t < 1.0 else 2000, 170, 140)]),
    }


def rules(report) -> dict[str, object]:
    return {v.rule: v for v in report.violations}


def test_one_talking_head_passes(videos):
    report = validate_file(str(videos["one"]), "video", faces="largest")
    assert report.verdict == "pass", report.violations


@pytest.mark.parametrize("name, share", [("cat", "0.0%"), ("away", None)])
def test_no_face_most_of_the_time_fails_naming_the_share(videos, name, share):
    report = validate_file(str(videos[name]), "video", faces="largest")
    v = rules(report)["video.one_face"]
    assert report.verdict == "fail" and v.severity == "fail"
    assert "sampled frames" in v.observed and (share is None or v.observed.startswith(f"exactly one face in {share}"))
    relaxed = validate_file(str(videos[name]), "video", {"video.one_face.min_share": 0.0}, faces="largest")
    assert "video.one_face" not in rules(relaxed)


def test_several_faces_warn_and_name_the_choice(videos):
    report = validate_file(str(videos["two"]), "video", faces="index=1")
    found = rules(report)
    assert found["video.several_faces"].severity == "warn"
    assert "'index=1'" in found["video.several_faces"].hint
    assert found["video.one_face"].severity == "fail"  # two faces everywhere: not one speaker's face


def test_small_face_warns(videos):
    v = rules(validate_file(str(videos["small"]), "video", faces="largest"))["video.face_size"]
    assert v.severity == "warn" and " px (" in v.observed


def test_face_rules_only_when_asked(videos):
    assert validate_file(str(videos["cat"]), "video").verdict == "pass"  # a dry run does not need a face


def test_cli_checks_faces_without_importing_torch(videos):
    code = ("import sys, runpy; sys.argv = ['lipline', 'validate', sys.argv[1], '--role', 'video', '--json'];"
            "import lipline.cli as c\ntry:\n    c.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(videos["cat"])], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout.splitlines()[0])
    assert report["verdict"] == "fail" and report["violations"][0]["rule"] == "video.one_face"
    assert "TORCH False" in proc.stdout
