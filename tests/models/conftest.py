"""Fixtures for the model tests: where the official LatentSync golden files are.

The golden tensors live beside the project in ``../shared/conformance/latentsync`` (never copied into the repo).
Set ``LIPLINE_CONFORMANCE_DIR`` to point elsewhere. Tests that need them skip with a clear reason when absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "conformance" / "latentsync"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    path = Path(os.environ.get("LIPLINE_CONFORMANCE_DIR", DEFAULT_DIR))
    if not (path / "manifest.json").is_file():
        pytest.skip(f"LatentSync conformance files not found at {path} (set LIPLINE_CONFORMANCE_DIR)")
    return path


@pytest.fixture(scope="session")
def conformance_manifest(conformance_dir: Path) -> dict:
    return json.loads((conformance_dir / "manifest.json").read_text())

