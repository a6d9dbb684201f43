"""``lipline sync-offset``: the JSON record, exit status 0 = pass / 1 = fail, a verdict and reason (never a
traceback) for a video without face, without audio, broken or missing, SyncNet scores when weights are set, and
no torch import without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass

import pytest

from tests.models.sync import clips as C

KEYS = {"offset_frames", "offset_ms", "confidence", "peak_corr", "verdict", "reason", "metric"}


def _lipline(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line in a fresh interpreter (`main`'s one-line errors included)."""
    environment = {k: v for k, v in os.environ.items() if k != "LIPLINE_SYNCNET_WEIGHTS"}
    return subprocess.run([sys.executable, "-c", "from lipline.cli import main; main()", *args], capture_output=True,
                          text=True, timeout=600, env={**environment, "OMP_NUM_THREADS": "1", **(env or {})})


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _invoke(*args: str) -> Result:
    """The command in this process (one import of the stack for all the cases; ~20 s less each)."""
    from typer.testing import CliRunner

    from lipline.cli import app

    result = CliRunner().invoke(app, list(args))
    stderr = "".join(traceback.format_exception(result.exception)) if result.exception and not isinstance(
        result.exception, SystemExit) else ""
    return Result(result.exit_code, result.stdout, stderr)


def _record(proc) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def talking(tmp_path_factory) -> C.ClipSet:
    return C.clip_set(tmp_path_factory.mktemp("sync-cli"))


def test_in_sync_passes(talking):
    proc = _invoke("sync-offset", str(talking.with_offset(0)), "--json")
    record = _record(proc)
    assert proc.returncode == 0 and KEYS <= set(record)
    assert record["verdict"] == "pass" and abs(record["offset_frames"]) <= 1 and record["metric"].endswith("(weight-free)")
    assert record["offset_ms"] == pytest.approx(40.0 * record["offset_frames"])


def test_late_audio_fails_with_the_offset(talking):
    proc = _invoke("sync-offset", str(talking.with_offset(6)))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert ": fail: the audio is" in proc.stdout and "late" in proc.stdout and "+ = audio late" in proc.stdout
    assert any(f"offset +{k} frames" in proc.stdout for k in (5, 6, 7)), proc.stdout


def test_separate_audio_file(talking):
    record = _record(_invoke("sync-offset", str(talking.silent), "--audio", str(talking.wav(-5)), "--json"))
    assert abs(record["offset_frames"] + 5) <= 1 and "early" in record["reason"]


def test_unrelated_audio_lips_do_not_follow(talking):
    proc = _invoke("sync-offset", str(talking.unrelated()), "--json")
    record = _record(proc)
    assert proc.returncode == 1 and record["verdict"] == "fail"
    assert record["reason"].startswith("lips do not follow the audio")


@pytest.mark.parametrize("case, reason", [
    ("silent", "no audio stream"), ("junk", "cannot be opened"), ("missing", "no such file"),
    ("no-face", "no usable face")])
def test_unusable_inputs_get_a_verdict_not_a_traceback(talking, tmp_path, case, reason):
    from lipline.samples import pattern_clip

    args = {"silent": lambda: [str(talking.silent)], "missing": lambda: [str(tmp_path / "none.mp4")]}.get(case)
    if case == "junk":
        (tmp_path / "junk.mp4").write_bytes(b"\x00\x01junk" * 500)
        args = lambda: [str(tmp_path / "junk.mp4")]  # noqa: E731
    elif case == "no-face":
        video = pattern_clip(tmp_path / "pattern.mp4", 320, 240, 25, 2.0)
        args = lambda: [str(video), "--audio", str(talking.wav(0))]  # noqa: E731
    proc = _invoke("sync-offset", *args(), "--json")
    record = _record(proc)
    assert proc.returncode == 1 and record["verdict"] == "fail" and reason in record["reason"]
    assert record["offset_frames"] is None


def test_cli_imports_no_torch_without_weights(talking):
    script = ("import json, sys\nfrom typer.testing import CliRunner\nfrom lipline.cli import app\n"
              f"result = CliRunner().invoke(app, ['sync-offset', {str(talking.with_offset(0))!r}, '--json'])\n"
              "print(json.dumps([result.exit_code, sorted(m for m in ('torch', 'diffusers', 'transformers') "
              "if m in sys.modules)]))")
    environment = {k: v for k, v in os.environ.items() if k != "LIPLINE_SYNCNET_WEIGHTS"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**environment, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0, []]


def test_syncnet_weights_setting_adds_lse(tmp_path):
    torch = pytest.importorskip("torch")
    from lipline.models.sync.syncnet import SyncNetS

    torch.manual_seed(0)
    weights = tmp_path / "syncnet_v2.model"
    torch.save({k: v for k, v in SyncNetS().state_dict().items() if not k.endswith("num_batches_tracked")}, weights)
    clip = C.short_clip(tmp_path)
    proc = _lipline("sync-offset", str(clip), "--json", env={"LIPLINE_SYNCNET_WEIGHTS": str(weights)})
    record = _record(proc)
    assert "SyncNet" in record["metric"] and record["syncnet"]["windows"] == 25
    assert record["syncnet"]["lse_d"] > 0 and record["syncnet"]["lse_c"] >= 0
    assert record["verdict"] == "fail" and "too few frames" in record["reason"]  # 30 frames: too short for NCC
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not torch")
    proc = _lipline("sync-offset", str(clip), "--syncnet", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "bad.model: SyncNet weights: not a torch state dict" in proc.stderr
