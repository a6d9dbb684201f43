"""A real `prefect server start` on loopback for tests: start it, wait until healthy, stop it.

Used by the integration stack (with workers and deployments) and by the CLI tests, whose `lipline`
subprocesses connect to one shared server (`PREFECT_API_URL`) instead of each starting Prefect's embedded
server; `tests/lipline_core/test_prefect_env.py` keeps testing the embedded start itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from lipline import PREFECT_ENV_DEFAULTS
from tests.s3server import free_port

PREFECT = str(Path(sys.executable).parent / "prefect")


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGINT (Prefect shuts down cleanly on it), then SIGKILL after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def stop_processes(procs: Iterable[subprocess.Popen], grace: float = 5.0) -> None:
    """Stop workers at a fixture's end, all at once: SIGINT to each (a Prefect or `lipline gpu-worker` worker exits
    in under a second when idle), then after `grace` seconds SIGKILL to the process group of any still running (they
    are started with `start_new_session`: the worker and whatever flow run or segment it still had in flight).
    One by one with a 15-20 s limit each, busy workers held a module's teardown for up to 45 s."""
    procs = [p for p in procs if p.poll() is None]
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group too: flow-run children outlive a worker that exited on its own
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def wait_healthy(api: str, server: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=10).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class PrefectServer:
    api: str                 # http://127.0.0.1:PORT/api
    process: subprocess.Popen
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.process, timeout)


def start_prefect_server(home: Path, log: Path, env: dict[str, str] | None = None) -> PrefectServer:
    """`prefect server start` with its own PREFECT_HOME (own SQLite database); returns once /health answers."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full_env = {**base, **PREFECT_ENV_DEFAULTS, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
                "PREFECT_LOGGING_LEVEL": "WARNING", **(env or {})}
    out = open(log, "wb")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=full_env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = PrefectServer(api, proc, log)
    try:
        wait_healthy(api, proc, log)
    except BaseException:
        server.stop(5)
        raise
    return server
