"""tests/conftest.py: a test session stops the Prefect temporary server its tests started, even when the process
then ends without running its exit handlers (as execnet ends a slow xdist worker: `os._exit`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

INNER_TEST = '''
import os
from pathlib import Path


def test_start_the_temporary_server():
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=180)
    Path(os.environ["LIPLINE_TEST_PIDFILE"]).write_text(str(server.server_process.pid))
'''

ABRUPT_EXIT = '''
import os


def pytest_unconfigure(config):
    os._exit(0)  # what execnet does to a worker that does not exit in time: no atexit handlers run
'''


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (PID 1 here may not reap it)


def test_the_temporary_server_is_stopped_at_session_end_however_the_process_exits(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    (tmp_path / "conftest.py").write_text(ABRUPT_EXIT)
    pidfile = tmp_path / "server.pid"
    env = {**os.environ, "LIPLINE_TEST_PIDFILE": str(pidfile), "PYTHONPATH": str(REPO),
           "PREFECT_HOME": str(tmp_path / "prefect-home")}  # its own database, not this session's
    env.pop("PREFECT_API_URL", None)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert pidfile.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not _alive(pid), "the session's Prefect server outlived it"
    finally:
        if _alive(pid):
            os.kill(pid, 9)
