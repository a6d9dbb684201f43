"""End-to-end: `lipline run` / `lipline validate` with real Prefect (embedded API), real ffmpeg, real stores."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import s3fs

from lipline.tasks.loudness import integrated_loudness, read_audio
from lipline.tasks.probe import probe_media

pytestmark = pytest.mark.integration
FPS = 25.0


def lipline(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lipline.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def check_deliverable(final: Path, manifest: dict, media) -> None:
    probe = probe_media(str(final))
    intro = probe_media(str(media.intro)).duration_s
    outro = probe_media(str(media.outro)).duration_s
    dub = probe_media(str(media.dub)).duration_s
    expected = intro + dub + outro
    assert abs(probe.duration_s - expected) <= 1.5 / FPS, (probe.duration_s, expected)
    assert probe.video.fps == pytest.approx(FPS, abs=0.01) and probe.video.constant_fps
    assert probe.audio.sample_rate == 48000 and probe.audio.channels == 2
    samples, sr = read_audio(final)
    main_part = samples[int(intro * sr): int((intro + dub) * sr)]
    assert integrated_loudness(main_part, sr) == pytest.approx(-16.0, abs=1.0)
    assert manifest["engine"]["name"] == "passthrough" and manifest["engine"]["dry_run"] is True
    assert manifest["inputs"]["video"]["sha256"] == hashlib.sha256(media.video.read_bytes()).hexdigest()
    assert manifest["loudness"]["after"]["integrated_lufs"] == pytest.approx(-16.0, abs=1.0)
    assert set(manifest["timings_s"]) >= {"validate", "normalize", "segment", "lipsync", "merge", "post"}


def test_run_to_local_store(media, tmp_path):
    store = tmp_path / "store"
    proc = lipline("run", str(media.video), str(media.dub), "--subtitles", str(media.subtitles), "--intro",
                   str(media.intro), "--outro", str(media.outro), "--store", str(store), "--job-id", "local-1",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(store / "local-1" / "final.mp4")
    assert "dry run" in proc.stderr and "Traceback" not in proc.stderr
    job = store / "local-1"
    assert sorted(p.name for p in job.iterdir()) == ["final.mp4", "final.srt", "final.vtt", "manifest.json",
                                                     "report.html", "validation.json"]
    manifest = json.loads((job / "manifest.json").read_text())
    for name, out in manifest["outputs"].items():
        assert hashlib.sha256((job / name).read_bytes()).hexdigest() == out["sha256"], name
    check_deliverable(job / "final.mp4", manifest, media)
    assert "-->" in (job / "final.srt").read_text() and (job / "final.vtt").read_text().startswith("WEBVTT")


def test_run_to_s3_store(media, s3_env, tmp_path):
    proc = lipline("run", str(media.video), str(media.dub), "--subtitles", str(media.subtitles), "--intro",
                   str(media.intro), "--outro", str(media.outro), "--store", f"s3://{s3_env.bucket}/deliveries",
                   "--job-id", "s3-1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"s3://{s3_env.bucket}/deliveries/s3-1/final.mp4"
    fs = s3fs.S3FileSystem(key=s3_env.access_key, secret=s3_env.secret_key,
                           client_kwargs={"endpoint_url": s3_env.endpoint}, skip_instance_cache=True)
    prefix = f"{s3_env.bucket}/deliveries/s3-1"
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(prefix))
    assert names == ["final.mp4", "final.srt", "final.vtt", "manifest.json", "report.html", "validation.json"]
    manifest = json.loads(fs.cat(f"{prefix}/manifest.json"))
    for name, out in manifest["outputs"].items():
        assert hashlib.sha256(fs.cat(f"{prefix}/{name}")).hexdigest() == out["sha256"], name
    final = tmp_path / "final.mp4"
    fs.get_file(f"{prefix}/final.mp4", str(final))
    check_deliverable(final, manifest, media)


def test_inputs_from_s3_and_odd_file_names(media, s3_env, tmp_path):
    odd = tmp_path / "-talk 'quoted' $HOME; 视频 🎬.mp4"
    shutil.copyfile(media.video, odd)
    fs = s3fs.S3FileSystem(key=s3_env.access_key, secret=s3_env.secret_key,
                           client_kwargs={"endpoint_url": s3_env.endpoint}, skip_instance_cache=True)
    fs.put_file(str(media.dub), f"{s3_env.bucket}/inputs/dub track.wav")
    not_utf8 = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/intro \xff\xfe.mp4"))  # invalid UTF-8 name
    shutil.copyfile(media.intro, not_utf8)
    store = tmp_path / "store dir"
    proc = lipline("run", str(odd), f"s3://{s3_env.bucket}/inputs/dub track.wav", "--intro", str(not_utf8),
                   "--store", str(store), "--job-id", "odd", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (store / "odd" / "final.mp4").is_file() and (store / "odd" / "manifest.json").is_file()


def test_bad_input_fails_cleanly_with_status(media, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(media.video.read_bytes()[: media.video.stat().st_size // 2])
    store = tmp_path / "store"
    proc = lipline("run", str(broken), str(media.dub), "--store", str(store), "--job-id", "bad", "--quiet")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "broken.mp4" in proc.stderr and "video." in proc.stderr
    job = store / "bad"
    assert not (job / "final.mp4").exists() and not (job / "manifest.json").exists()
    status = json.loads((job / "status.json").read_text())
    assert status["status"] == "failed" and status["stage"] == "validate"
    assert any("broken.mp4" in r for r in status["reasons"])
    report = json.loads((job / "validation.json").read_text())
    assert report[0]["verdict"] == "fail"


def test_store_refusing_writes_fails_before_work(media, tmp_path):
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    proc = lipline("run", str(media.video), str(media.dub), "--store", str(blocker), "--quiet")
    assert proc.returncode == 1
    assert "refuses writes" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_engine_and_bad_params_are_refused(media, tmp_path):
    proc = lipline("run", str(media.video), str(media.dub), "--engine", "nope", "--store", str(tmp_path), "--quiet")
    assert proc.returncode == 2 and "unknown engine 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = lipline("run", str(media.video), str(media.dub), "--max-segment-s", "45", "--store", str(tmp_path))
    assert proc.returncode == 2 and "max_segment_s" in proc.stderr and "Traceback" not in proc.stderr
    proc = lipline("run", str(media.video), str(media.dub), "--length-mode", "sideways", "--store", str(tmp_path))
    assert proc.returncode == 2 and "sideways" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_json_and_exit_status(media, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    proc = lipline("validate", str(media.dub), str(empty), "--role", "audio", "--json")
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in lines] == [str(media.dub), str(empty)]
    assert lines[0]["verdict"] in ("pass", "warn") and lines[1]["verdict"] == "fail"
    assert set(lines[1]) == {"file", "role", "verdict", "violations"}
    v = lines[1]["violations"][0]
    assert set(v) >= {"rule", "severity", "observed", "expected", "hint"} and v["rule"].startswith("audio.")
    ok = lipline("validate", str(media.video), "--role", "video", "--json", "--face", "none")  # faces: test_face_contract
    assert ok.returncode == 0 and json.loads(ok.stdout)["verdict"] in ("pass", "warn")
    wrong = lipline("validate", str(media.dub), "--role", "video")
    assert wrong.returncode == 1 and "video.has_video_stream" in wrong.stdout and "Traceback" not in wrong.stderr


def test_passthrough_on_a_forward_plan_writes_no_segment_files(media, tmp_path):
    """Dub shorter than the video (trim): the passthrough picture is the normalized video itself, cut to the dub."""
    from lipline import samples

    short_dub = samples.write_audio(tmp_path / "short dub.wav", samples.speech_like(9.0, seed=11))
    store = tmp_path / "store"
    proc = lipline("run", str(media.video), str(short_dub), "--store", str(store), "--job-id", "fwd", "--quiet")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((store / "fwd" / "manifest.json").read_text())
    assert manifest["length_mode"] == "trim"
    results = manifest["engine"]["segments"]  # what the engine returned: its input frames, untouched
    ranges = [tuple(r["frame_range"]) for r in results]
    assert ranges[0][0] == 0 and ranges[-1][1] == 225 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(r["passed_through"] == [{"start": 0, "end": b - a, "reason": "dry run"}]
               for r, (a, b) in zip(results, ranges))
    assert all(tuple(s["frame_range"]) == r for s, r in zip(manifest["segments"], ranges))  # no segment video
    final = probe_media(str(store / "fwd" / "final.mp4"))
    assert final.video.frame_count == 225  # 9.0 s at 25 fps: the video's extra 3 s are trimmed
    assert abs(final.audio.duration_s - 9.0) < 0.05


def test_two_runs_at_once_do_not_collide(media, tmp_path):
    store = tmp_path / "store"
    cmds = [[sys.executable, "-m", "lipline.cli", "run", str(media.video), str(media.dub), "--subtitles",
             str(media.subtitles), "--store", str(store), "--job-id", job, "--quiet"] for job in ("twin-a", "twin-b")]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outs):
        assert proc.returncode == 0, stderr
    for job in ("twin-a", "twin-b"):
        manifest = json.loads((store / job / "manifest.json").read_text())
        assert manifest["job_id"] == job
        assert hashlib.sha256((store / job / "final.mp4").read_bytes()).hexdigest() == manifest["outputs"]["final.mp4"]["sha256"]


def test_replace_a_completed_job(media, tmp_path):
    """A completed job id is refused (the deliverable untouched) unless --replace, which makes it anew."""
    from lipline import samples
    from lipline.flows.localize import localize
    from lipline.params import LocalizeParams

    dub = samples.write_audio(tmp_path / "dub.wav", samples.speech_like(2.0, pauses=()))
    video = samples.talking_video(tmp_path / "talk.mp4", media.face, 2.0, width=192, height=108)
    store = tmp_path / "store"
    overrides = {"video.short_side.min_px": 64, "audio.duration.min_s": 1}
    localize(LocalizeParams(video_uri=str(video), audio_uri=str(dub), engine="passthrough", store=str(store),
                            job_id="again", contract_overrides=overrides))  # the first run, in-process (faster)
    args = ["run", str(video), str(dub), "--engine", "passthrough", "--store", str(store), "--job-id", "again",
            *(f"--set={key}={value}" for key, value in overrides.items()), "--quiet"]
    job = store / "again"
    before = {name: (job / name).read_bytes() for name in ("final.mp4", "manifest.json")}

    refused = lipline(*args, "--loudness", "-23")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "already complete" in refused.stderr and "--replace" in refused.stderr
    assert {name: (job / name).read_bytes() for name in before} == before  # nothing touched

    replaced = lipline(*args, "--loudness", "-23", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    manifest = json.loads((job / "manifest.json").read_text())
    assert manifest["params"]["loudness_lufs"] == -23.0 and manifest["params"]["replace"] is True
    assert manifest["completed_at"] != json.loads(before["manifest.json"])["completed_at"]
    assert hashlib.sha256((job / "final.mp4").read_bytes()).hexdigest() == manifest["outputs"]["final.mp4"]["sha256"]
