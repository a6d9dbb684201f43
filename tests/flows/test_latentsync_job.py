"""Real lip-sync jobs on a CPU: `lipline run --engine latentsync` with the smoke model (random weights in the
official layout, loaded by the real loading code) through the whole face path, against the passthrough run."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipline import samples
from lipline.models.face.facetrack import FaceTrack
from tests.flows.test_localize_cli import lipline

pytestmark = pytest.mark.integration
FAST = ("--steps", "2", "--guidance", "1.0", "--quiet", "--set", "audio.duration.min_s=1")


@pytest.fixture(scope="session")
def smoke_weights(tmp_path_factory) -> Path:
    from lipline.models.latentsync.smoke import write_smoke_release

    folder = tmp_path_factory.mktemp("smoke-weights")
    write_smoke_release(folder, "1.5")
    return folder


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """1.6 s of the astronaut at 25 fps (40 frames), and a dub of the same length with a 0.7 s pause in the middle:
    one window of speech on each side of the silence."""
    d = tmp_path_factory.mktemp("ls-clip")
    face = samples.face_png(d / "face.png")
    video = samples.talking_video(d / "talk.mp4", face, 1.6, 640, 360, 25)
    dub = samples.write_audio(d / "dub.wav", samples.speech_like(1.6, pauses=((0.5, 1.2),)))
    return video, dub


def frames(path: Path) -> tuple[np.ndarray, Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = Fraction(s.average_rate)
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]), rate


@pytest.fixture(scope="session")
def jobs(clip, smoke_weights, tmp_path_factory):
    """The same clip through `--engine auto` twice: without weights (a labelled passthrough dry run) and with the
    smoke model in the weights dir (latentsync)."""
    video, dub = clip
    store = tmp_path_factory.mktemp("ls-store")
    out = {"store": store}
    for name, weights in (("passthrough", store / "no-weights"), ("latentsync", smoke_weights)):
        proc = lipline("run", str(video), str(dub), "--weights", str(weights), "--store", str(store), "--job-id", name,
                       *FAST)
        assert proc.returncode == 0, proc.stderr
        out[name] = (store / name, proc)
    return out


def test_latentsync_job_is_labelled_and_keeps_rate_and_frame_count(jobs):
    job, proc = jobs["latentsync"]
    assert "smoke model: not a real lip-sync" in proc.stderr and "Traceback" not in proc.stderr
    manifest = json.loads((job / "manifest.json").read_text())
    engine = manifest["engine"]
    assert (engine["requested"], engine["name"], engine["dry_run"], engine["smoke_model"]) == (
        "auto", "latentsync", False, True)  # auto picks latentsync when its weights are there
    segment = engine["segments"][0]
    assert segment["settings"]["steps"] == 2 and segment["settings"]["checkpoints"]["unet"]
    assert engine["faces"]["valid"] == engine["faces"]["frames"] == 40
    assert engine["faces"]["cache_hit"] is False and engine["faces"]["frames_detected_this_job"] > 0
    gate = manifest["quality"]["segments"][0]  # measured; 40 frames are too few for a verdict (50 needed)
    assert gate["verdict"] == "unmeasured" and "too few frames" in gate["reason"] and gate["retries"] == 0
    ls, rate = frames(job / "final.mp4")
    pt, pt_rate = frames(jobs["passthrough"][0] / "final.mp4")
    assert rate == pt_rate == 25 and ls.shape == pt.shape and ls.shape[0] == 40


def test_only_the_face_changes_and_silence_keeps_the_original_mouth(jobs):
    manifest = json.loads((jobs["latentsync"][0] / "manifest.json").read_text())
    segment = manifest["engine"]["segments"][0]
    generated = {i for s in segment["generated"] for i in range(s["start"], s["end"])}
    silent = {i for s in segment["passed_through"] if s["reason"] == "silence" for i in range(s["start"], s["end"])}
    assert generated and silent and not generated & silent
    assert silent <= set(range(12, 31))  # the pause is 0.5-1.2 s = frames 12.5..30
    ls, _ = frames(jobs["latentsync"][0] / "final.mp4")
    pt, _ = frames(jobs["passthrough"][0] / "final.mp4")
    diff = np.abs(ls.astype(np.int16) - pt.astype(np.int16)).max(axis=3)  # (frames, H, W)
    face_box = np.zeros(diff.shape[1:], bool)
    (cached,) = (jobs["store"] / "_cache" / "faces").glob("*.npz")  # the job's face track
    x, y, w, h = np.nanmedian(FaceTrack.load(cached).boxes, axis=0)
    face_box[int(y - 0.3 * h):int(y + 1.3 * h), int(x - 0.3 * w):int(x + 1.3 * w)] = True  # the face, with margin
    assert diff[:, ~face_box].mean() < 1.0  # outside the face: the same picture within encode noise
    gen = sorted(generated)
    assert diff[gen][:, face_box].mean() > 3 * diff[:, ~face_box].mean() + 1  # the random model changed the mouth
    core = sorted(silent)[3:-3]
    # deep in the silence: the source frames (bit-exact in the engine's output, tests/models/latentsync/
    # test_video_engine.py); here only the final encode's noise on the face's texture remains
    assert diff[core][:, face_box].mean() < 0.25 * diff[gen][:, face_box].mean()


def test_auto_without_weights_is_a_labelled_dry_run(jobs):
    job, proc = jobs["passthrough"]
    assert "DRY RUN" in proc.stderr and "lipline weights pull" in proc.stderr and "Traceback" not in proc.stderr
    manifest = json.loads((job / "manifest.json").read_text())
    engine = manifest["engine"]
    assert (engine["requested"], engine["name"], engine["dry_run"]) == ("auto", "passthrough", True)
    assert engine["notices"] and "faces" not in engine  # a dry run tracks no faces
    assert {q["verdict"] for q in manifest["quality"]["segments"]} == {"skipped"}  # nothing generated to measure


def test_latentsync_without_weights_fails_before_any_work(clip, tmp_path):
    video, dub = clip
    proc = lipline("run", str(video), str(dub), "--engine", "latentsync", "--weights", str(tmp_path / "none"),
                   "--store", str(tmp_path / "s"), "--job-id", "no-w", *FAST)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "lipline weights pull" in proc.stderr
    assert not (tmp_path / "s" / "no-w" / "validation.json").exists()  # refused before validation


def test_30fps_source_keeps_its_exact_rate(smoke_weights, tmp_path):
    face = samples.face_png(tmp_path / "face.png")
    video = samples.talking_video(tmp_path / "talk30.mp4", face, 1.0, 640, 360, 30)
    dub = samples.write_audio(tmp_path / "dub.wav", samples.speech_like(1.0, pauses=()))
    proc = lipline("run", str(video), str(dub), "--engine", "latentsync", "--weights", str(smoke_weights),
                   "--store", str(tmp_path / "s"), "--job-id", "r30", *FAST)
    assert proc.returncode == 0, proc.stderr
    got, rate = frames(tmp_path / "s" / "r30" / "final.mp4")
    assert rate == 30 and got.shape[0] == 30
