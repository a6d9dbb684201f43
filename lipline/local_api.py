"""Prefect's API for a `lipline run` on one machine, ready sooner.

With no Prefect API configured, Prefect starts a temporary server the first time a flow needs it — after every
import is done, and it then waits 7–20 s for it with nothing else happening. `lipline run` instead decides as it
starts, before importing Prefect:

1. an API configured anywhere Prefect reads it (``PREFECT_API_URL``, the active profile, ``prefect.toml``, ``.env``,
   ``[tool.prefect]`` in ``pyproject.toml``): used as configured, nothing started here;
2. a Prefect server already answering at ``LIPLINE_LOCAL_API_URL`` (default ``http://127.0.0.1:4200/api``, where
   ``prefect server start`` and ``lipline stack up`` listen): reused, and the run shows in its UI;
3. otherwise Prefect's own temporary server (the same command and environment Prefect uses) is started now, so
   that it boots on the other core while this process imports and validates the inputs, and is stopped when the
   run ends.

``LIPLINE_LOCAL_API_URL=off`` skips step 2.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from lipline.errors import LiplineError

DEFAULT_LOCAL_API = "http://127.0.0.1:4200/api"


class LocalAPIError(LiplineError):
    """Prefect's temporary API server could not be started (with its last output and what to do)."""


def _answers(api_url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as r:  # noqa: S310 - loopback
            return r.status == 200
    except (OSError, ValueError):
        return False


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def api_configured_elsewhere(cwd: Path | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether Prefect would find an API URL of its own: the environment, the active profile, or the current
    folder's ``prefect.toml`` / ``.env`` / ``pyproject.toml [tool.prefect]``."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    if env.get("PREFECT_API_URL"):
        return True
    home = Path(env.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    profiles = _toml(Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser())
    active = env.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    if (profiles.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL"):
        return True
    for settings in (_toml(cwd / "prefect.toml"), _toml(cwd / "pyproject.toml").get("tool", {}).get("prefect", {})):
        if (settings.get("api") or {}).get("url"):
            return True
    try:
        return any(line.strip().startswith("PREFECT_API_URL=") for line in (cwd / ".env").read_text().splitlines())
    except (OSError, UnicodeDecodeError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when `lipline run` dies, even by SIGKILL (no orphaned server)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _temporary_server(port: int, log: Path) -> subprocess.Popen:
    """Prefect's `SubprocessASGIServer` command and environment (prefect/server/api/server.py), started early."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    app_dir = Path(spec.origin).parent.parent  # prefect.__module_path__.parent, without importing prefect
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
                                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "error", "--lifespan", "on"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


@dataclass
class LocalAPI:
    """The API a `lipline run` uses: reused (``process`` None) or a temporary server this run started."""

    url: str
    process: subprocess.Popen | None = None
    log: Path | None = None

    def wait_ready(self, timeout: float | None = None) -> float:
        """Block until the API answers; returns the seconds waited. Raises `LocalAPIError` if the server exits or
        does not answer within ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (as Prefect would)."""
        if self.process is None:
            return 0.0
        timeout = timeout or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        started = time.monotonic()
        while not _answers(self.url, timeout=2.0):
            if self.process.poll() is not None:
                raise LocalAPIError(f"Prefect's temporary API server exited with status {self.process.returncode} "
                                    f"before answering: {self._last_output()} — start one with `prefect server "
                                    "start` and run again (it is reused), or set PREFECT_API_URL")
            if time.monotonic() - started > timeout:
                self.stop()
                raise LocalAPIError(f"Prefect's temporary API server did not answer within {timeout:.0f} s "
                                    f"({self._last_output()}): raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
                                    "on a slow machine, or start `prefect server start` once and run again")
            time.sleep(0.1)
        return time.monotonic() - started

    def _last_output(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except (OSError, AttributeError):
            lines = []
        return lines[-1][:300] if lines else "no output"

    def stop(self) -> None:
        """Stop a server this run started (SIGTERM, then SIGKILL after 5 s); a reused one is left running."""
        proc, self.process = self.process, None
        if proc is None:
            return
        _drain_prefect_services()  # the run's last logs and events reach the server before it goes
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.log is not None:
            self.log.unlink(missing_ok=True)


def _drain_prefect_services(timeout: float = 15.0) -> None:
    """Send what Prefect's log and event workers still hold (else they retry a stopped server for a minute)."""
    if "prefect" not in sys.modules:
        return
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
        EventsWorker.drain_all(timeout=timeout)
    except Exception:  # noqa: BLE001 - best effort: the run's result is already decided
        pass


def exit_now(code: int) -> NoReturn:
    """End a finished `lipline run` without the interpreter's teardown (freeing Prefect, great-expectations, pandas
    and torch module by module: ~2 s of CPU on a small machine), once what must outlive it is done: Prefect's last
    logs and events sent, child processes (the validation prefetch) ended, stdout and stderr flushed. A temporary
    server was stopped by `LocalAPI.stop` before this."""
    _drain_prefect_services()
    for child in multiprocessing.active_children():
        child.join(timeout=2)
        if child.is_alive():
            child.terminate()
            child.join(timeout=2)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def prepare(local_api_url: str | None = DEFAULT_LOCAL_API) -> LocalAPI | None:
    """Choose (and, if needed, start) the API for this process and point ``PREFECT_API_URL`` at it. Must run
    before Prefect is imported. None when Prefect has an API configured of its own."""
    if api_configured_elsewhere():
        return None
    if local_api_url and local_api_url.lower() != "off" and _answers(local_api_url, timeout=0.5):
        api = LocalAPI(url=local_api_url.rstrip("/"))
    else:
        port = _free_port()
        log = Path(tempfile.mkstemp(prefix="lipline-prefect-server-", suffix=".log")[1])
        api = LocalAPI(url=f"http://127.0.0.1:{port}/api", process=_temporary_server(port, log), log=log)
        atexit.register(api.stop)
    os.environ["PREFECT_API_URL"] = api.url
    return api


__all__ = ["DEFAULT_LOCAL_API", "LocalAPI", "LocalAPIError", "api_configured_elsewhere", "exit_now", "prepare"]
