"""``lipline weights pull|verify`` (typer sub-app in lipline.weights_cli)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lipline.weights_cli import app
from tests.models.latentsync.tiny_release import write_tiny_release

runner = CliRunner()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("cli") / "hub", "1.5")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    from lipline.models.latentsync.config import UNet3DConfig

    p = tmp_path_factory.mktemp("cfg") / "unet_tiny.json"
    p.write_text(json.dumps(UNet3DConfig.tiny().to_dict()))
    return p


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("LIPLINE_LATENTSYNC_MASK", raising=False)


def test_import_is_light():
    code = ("import sys, lipline.weights_cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_verify_json_ok(release, tiny_config):
    res = runner.invoke(app, ["verify", "--version", "1.5", "--cache-dir", str(release.cache), "--json",
                              "--mask", str(release.mask_file), "--unet-config", str(tiny_config)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and [f["role"] for f in doc["files"]] == ["unet", "whisper", "vae_config", "vae_weights", "mask"]
    for f in doc["files"]:
        data = Path(f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["size"] == len(data)


def test_verify_table_ok(release, tiny_config):
    res = runner.invoke(app, ["verify", "--cache-dir", str(release.cache), "--mask", str(release.mask_file),
                              "--unet-config", str(tiny_config)])
    assert res.exit_code == 0, res.output
    sha = hashlib.sha256(release.mask_file.read_bytes()).hexdigest()
    assert "OK" in res.stdout and sha in res.stdout.replace("\n", "").replace(" ", "").replace("│", "")


def test_verify_problems_exit_1_with_one_line(release):
    # the tiny UNet is not the official architecture: problems, exit 1, no traceback (no mask file is fine)
    res = runner.invoke(app, ["verify", "--cache-dir", str(release.cache)])
    assert res.exit_code == 1
    err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error: ") and "Traceback" not in res.output
    assert "unet" in err_lines[0] and "mask" not in err_lines[0]


def test_verify_unknown_version_is_one_line(tmp_path):
    res = runner.invoke(app, ["verify", "--version", "2.0", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stderr.strip() == "error: unknown LatentSync version '2.0'; known versions: 1.5, 1.6"


def test_verify_missing_files(tmp_path):
    res = runner.invoke(app, ["verify", "--version", "1.6", "--cache-dir", str(tmp_path), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    missing = [f for f in doc["files"] if f["path"] is None]
    assert len(missing) == 5 and "lipline weights pull --version 1.6" in missing[0]["problems"][0]


def test_pull_offline(release, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    res = runner.invoke(app, ["pull", "--version", "1.5", "--cache-dir", str(release.cache)])
    assert res.exit_code == 0, res.output
    assert "LatentSync 1.5 (256 px) weights are in" in res.stdout and "LIPLINE_LATENTSYNC_MASK" in res.stderr
    res = runner.invoke(app, ["pull", "--version", "1.6", "--cache-dir", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines()[-1].startswith("error: could not fetch ByteDance/LatentSync-1.6/latentsync_unet.pt")
