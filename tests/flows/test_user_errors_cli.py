"""Issue 16 item 4 (no traceback for anything a user can cause) and item 7's CLI parts, through the real CLI.

Each case: exit status 1, one ``error:`` line naming the thing, the cause and what to do, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from lipline.errors import ManifestError, UnknownScheme
from tests.flows.test_localize_cli import lipline

pytestmark = pytest.mark.integration


def assert_one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("store, words", [("gs://bucket/deliveries", ("gs://", "not installed", "gcsfs")),
                                          ("foo://bucket/x", ("foo://", "not a known storage scheme"))])
def test_unusable_store_scheme(media, tmp_path, store, words):
    proc = lipline("run", str(media.video), str(media.dub), "--store", store, "--quiet", cwd=tmp_path)
    assert_one_error_line(proc, store, *words)


def test_s3_wrong_credentials(media, s3_env, tmp_path):
    proc = lipline("run", str(media.video), str(media.dub), "--store", f"s3://{s3_env.bucket}/d", "--quiet",
                   env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, cwd=tmp_path)
    assert_one_error_line(proc, f"s3://{s3_env.bucket}/d", "refuses writes", "AWS_SECRET_ACCESS_KEY")


def test_s3_unreachable_endpoint(media, tmp_path):
    proc = lipline("run", str(media.video), str(media.dub), "--store", "s3://bucket/d", "--quiet", cwd=tmp_path,
                   env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                        "AWS_SECRET_ACCESS_KEY": "s"})
    assert_one_error_line(proc, "s3://bucket/d", "Could not connect", "AWS_ENDPOINT_URL")


def without_file_override(*cmd: str) -> list[str]:
    """Run `cmd` without root's power to read any file (a mode-000 file is then unreadable even for root)."""
    if os.geteuid() != 0:
        return list(cmd)
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]


def test_unreadable_inputs_fail_validation_without_traceback(media, tmp_path):
    import sys

    locked = {"video": tmp_path / "locked.mp4", "subtitles": tmp_path / "locked.srt"}
    shutil.copyfile(media.video, locked["video"])
    shutil.copyfile(media.subtitles, locked["subtitles"])
    for path in locked.values():
        path.chmod(0)
    for role, path in locked.items():
        proc = subprocess.run(without_file_override(sys.executable, "-m", "lipline.cli", "validate", str(path),
                                                    "--role", role, "--face", "none"),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"FAIL {path} ({role})" in proc.stdout and f"{role}.readable" in proc.stdout
        assert "Permission" in proc.stdout, proc.stdout


def test_validate_leaves_no_temp_dirs(media, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for role, path in (("video", media.video), ("audio", media.dub), ("subtitles", media.subtitles)):
        proc = lipline("validate", str(path), "--role", role, "--face", "none", env={"TMPDIR": str(tmp)})
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp.iterdir()) == []


def test_input_with_unknown_scheme_is_named(tmp_path):
    from lipline.uris import local_path

    with pytest.raises(UnknownScheme, match=r"input gs://b/talk\.mp4: the gs:// scheme needs a package"):
        local_path("gs://b/talk.mp4", tmp_path)


@pytest.mark.parametrize("name, content, words", [
    ("missing.csv", None, "not found"),
    ("quote.csv", 'video,audio\n"a.mp4,b.wav\n', "cannot be read as CSV"),
    ("cut.jsonl", '{"video": ', "cannot be read as JSON"),
    ("columns.csv", "clip,dub\na.mp4,b.wav\n", "lacks column(s) audio, video"),
])
def test_bad_batch_manifest_is_one_line(tmp_path, name, content, words):
    from lipline.flows.batch import read_manifest

    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ManifestError) as info:
        read_manifest(str(path))
    assert str(path) in str(info.value) and words in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def tiny_work_dir(tmp_path):
    """A 2 MB tmpfs as the work dir: the disk fills during the job."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode:
        pytest.skip("needs root to mount a tmpfs")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_work_dir(media, tmp_path, tiny_work_dir):
    store = tmp_path / "store"
    proc = lipline("run", str(media.video), str(media.dub), "--engine", "passthrough", "--store", str(store),
                   "--job-id", "full", "--quiet", env={"LIPLINE_WORK_DIR": str(tiny_work_dir)})
    assert_one_error_line(proc, "No space left on device", "LIPLINE_WORK_DIR")
    assert sorted(p.name for p in (store / "full").iterdir()) == ["status.json", "validation.json"]
    assert list(tiny_work_dir.iterdir()) == []


def test_wrong_gpu_deployment_and_work_prefix_cleaned(media, tmp_path):
    store = tmp_path / "store"
    name = f"lipsync-segments/no-such-{uuid.uuid4().hex[:6]}"
    proc = lipline("run", str(media.video), str(media.dub), "--engine", "passthrough", "--store", str(store),
                   "--job-id", "gpu", "--quiet", env={"LIPLINE_GPU_DEPLOYMENT": name})
    assert_one_error_line(proc, f"LIPLINE_GPU_DEPLOYMENT={name!r}", "no such deployment", "prefect deployment ls")
    job = store / "gpu"
    assert sorted(p.name for p in job.iterdir()) == ["status.json", "validation.json"]  # work/ is gone
    assert Path(job / "status.json").read_text().count("DeploymentNotFound") == 1


@pytest.mark.parametrize("role", ["video", "subtitles"])
def test_input_that_cannot_be_fetched_is_a_failed_report(role, tmp_path):
    from lipline.tasks.validate import validate_inputs

    (report,) = validate_inputs({role: "gs://bucket/input"}, workdir=tmp_path)
    (violation,) = [v for v in report.violations if v.severity == "fail"]
    assert violation.rule == f"{role}.readable" and "gs://" in violation.observed
