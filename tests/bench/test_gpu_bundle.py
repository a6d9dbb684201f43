"""bench/gpu_bundle.py: the wheels carried to the lent GPU machine meet every requirement there, and fit one call."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))

from bench import gpu_bundle  # noqa: E402


def make_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal wheel: just the METADATA the checker reads."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{meta}")
    return path


def test_every_carried_package_is_pinned_by_the_lock():
    pins = gpu_bundle.carried_pins(gpu_bundle.lock_pins())
    assert [p.split("==")[0] for p in pins] == list(gpu_bundle.CARRY)
    assert all(len(p.split("==")[1]) > 0 for p in pins)


def test_an_unpinned_carried_package_is_refused(monkeypatch):
    monkeypatch.setattr(gpu_bundle, "CARRY", (*gpu_bundle.CARRY, "no-such-package"))
    with pytest.raises(gpu_bundle.BundleError, match="pins no version of no-such-package"):
        gpu_bundle.carried_pins(gpu_bundle.lock_pins())


def test_the_device_list_reads_names_and_known_versions():
    device = gpu_bundle.device_packages()
    assert device["torch"] == Version("2.11.0") and device["transformers"] == Version("5.17.0")
    assert "scipy" in device and device["scipy"] is None  # listed without a version
    assert not {"diffusers", "pydantic", "av"} & set(device)  # what the suite needs and the image lacks


def test_unmet_requirements_name_the_missing_package_and_the_wrong_version(tmp_path):
    device = {"numpy": Version("2.5.2"), "requests": None, "huggingface-hub": Version("1.33.0")}
    wheels = [
        make_wheel(tmp_path, "alpha", "1.0", ["numpy>=2", "requests", "beta==0.3", "huggingface-hub>=2.0",
                                              "gamma; python_version < '3.12'", "delta; extra == 'docs'"]),
        make_wheel(tmp_path, "beta", "0.3", ["epsilon>=1"]),
    ]
    problems = gpu_bundle.unmet_requirements(wheels, device, "3.12")
    assert problems == [
        "alpha-1.0-py3-none-any.whl needs huggingface-hub>=2.0: huggingface-hub 1.33.0 is on the device",
        "beta-0.3-py3-none-any.whl needs epsilon>=1: neither carried nor on the device (add it to CARRY)",
    ]
    # for another Python the marker counts
    assert any("gamma" in p for p in gpu_bundle.unmet_requirements(wheels, device, "3.11"))


def test_a_carried_wheel_of_the_wrong_version_is_named(tmp_path):
    wheels = [make_wheel(tmp_path, "alpha", "1.0", ["beta>=1"]), make_wheel(tmp_path, "beta", "0.9", [])]
    assert gpu_bundle.unmet_requirements(wheels, {}, "3.12") == [
        "alpha-1.0-py3-none-any.whl needs beta>=1: beta 0.9 is carried"]


def test_check_refuses_a_bundle_without_this_project(tmp_path):
    make_wheel(tmp_path, "alpha", "1.0", [])
    with pytest.raises(gpu_bundle.BundleError, match="no lipline wheel"):
        gpu_bundle.check(tmp_path, "3.12")


def test_check_refuses_a_bundle_over_one_call(tmp_path, monkeypatch):
    make_wheel(tmp_path, "lipline", "0.1.0", [])
    monkeypatch.setattr(gpu_bundle, "CALL_LIMIT_BYTES", 1000)
    with pytest.raises(gpu_bundle.BundleError, match="over the 0 MiB one device call carries"):
        gpu_bundle.check(tmp_path, "3.12")


@pytest.mark.integration
def test_the_real_bundle_downloads_and_meets_every_requirement(tmp_path, capsys):
    """The pinned Python 3.12 wheels from the registry, this project's wheel, the check: what a GPU session runs."""
    assert gpu_bundle.main(["--dest", str(tmp_path / "whl")]) == 0
    names = {p.name.split("-")[0].lower() for p in (tmp_path / "whl").glob("*.whl")}
    assert {"lipline", "diffusers", "pydantic_core", "soundfile"} <= names
    assert any("cp312" in p.name for p in (tmp_path / "whl").glob("pydantic_core-*.whl"))
    assert "every requirement met" in capsys.readouterr().out
