"""LatentSync test fixtures (the conformance files come from ``tests/models/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_mask_env(monkeypatch):
    """Tests choose the mask explicitly; an operator's LIPLINE_LATENTSYNC_MASK must not leak in."""
    monkeypatch.delenv("LIPLINE_LATENTSYNC_MASK", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
