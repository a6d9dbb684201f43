"""Prefect's first start on a fresh PREFECT_HOME: Lipline raises the ephemeral server's startup timeout."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import {module}, prefect.settings as s; "
         "print(s.get_current_settings().server.ephemeral.startup_timeout_seconds)")


def _startup_timeout(module: str, tmp_path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "fresh-home")
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


def test_every_entry_point_raises_the_ephemeral_startup_timeout(tmp_path):
    # Prefect's default (20 s) is shorter than a first start with database migrations on 2 busy cores.
    for module in ("lipline.cli", "lipline.flows.localize", "lipline.flows.batch"):
        assert _startup_timeout(module, tmp_path) >= 120, module


def test_a_user_setting_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "45")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(module="lipline.cli")], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert float(out.stdout.strip().splitlines()[-1]) == 45
