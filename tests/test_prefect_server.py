"""tests/prefect_server.py: the helpers every server/worker fixture stops its processes with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.prefect_server import stop_processes

# a worker that ignores SIGINT (busy) and has a child in its process group (a flow run in flight)
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""
POLITE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a worker does: CI may start us with SIGINT ignored
try:
    open(sys.argv[1], "w").write("ready")
    time.sleep(600)
except KeyboardInterrupt:
    pass
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_stop_processes_interrupts_then_kills_a_stubborn_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN, str(pidfile)], start_new_session=True)
    ready = tmp_path / "polite.ready"
    polite = subprocess.Popen([sys.executable, "-c", POLITE, str(ready)], start_new_session=True)
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text() and ready.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pidfile.read_text())
    stop_processes([stubborn, polite], grace=10.0)  # a loaded machine: time for the polite one to exit
    assert polite.returncode == 0  # stopped by its SIGINT
    assert stubborn.returncode == -9  # killed after the grace
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert _gone(child), "the worker's child outlived it"
    finally:
        if not _gone(child):
            os.kill(child, 9)
