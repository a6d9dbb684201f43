"""`lipline run` and Prefect's API (lipline/local_api.py): an API configured anywhere Prefect reads it is left
alone; a running local server is reused (the run is in its database); otherwise Prefect's temporary server is
started early and stopped after the run's logs reached it — real Prefect servers, real `lipline run`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lipline import prefect_http
from lipline.local_api import api_configured_elsewhere
from tests.prefect_server import start_prefect_server

SERVER_APP = "prefect.server.api.server:create_app"


@pytest.mark.parametrize("where", ["none", "env", "profile", "prefect.toml", "pyproject", "dotenv"])
def test_an_api_configured_anywhere_prefect_reads_it_is_left_alone(tmp_path, where):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    env = {"PREFECT_HOME": str(home)}
    url = "http://prefect.internal:4200/api"
    if where == "env":
        env["PREFECT_API_URL"] = url
    elif where == "profile":
        (home / "profiles.toml").write_text(f'active = "work"\n[profiles.work]\nPREFECT_API_URL = "{url}"\n'
                                            '[profiles.ephemeral]\n')
    elif where == "prefect.toml":
        (cwd / "prefect.toml").write_text(f'[api]\nurl = "{url}"\n')
    elif where == "pyproject":
        (cwd / "pyproject.toml").write_text(f'[project]\nname = "x"\n[tool.prefect.api]\nurl = "{url}"\n')
    elif where == "dotenv":
        (cwd / ".env").write_text(f"OTHER=1\nPREFECT_API_URL={url}\n")
    assert api_configured_elsewhere(cwd=cwd, env=env) is (where != "none")


def test_an_inactive_profile_with_an_api_does_not_count(tmp_path):
    (tmp_path / "profiles.toml").write_text('active = "ephemeral"\n[profiles.work]\nPREFECT_API_URL = "http://x/api"\n')
    assert not api_configured_elsewhere(cwd=tmp_path, env={"PREFECT_HOME": str(tmp_path)})


def _server_processes(home: Path) -> set[int]:
    """Prefect API servers running with ``PREFECT_HOME=home`` (a test's own: the servers of the other tests that run
    at the same time under `pytest -n` are not its business)."""
    pids, env = set(), f"PREFECT_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if SERVER_APP.encode() in (entry / "cmdline").read_bytes() and \
                        env in (entry / "environ").read_bytes().split(b"\0"):
                    pids.add(int(entry.name))
            except OSError:
                pass
    return pids


def _run(media, store: Path, job_id: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run([sys.executable, "-m", "lipline.cli", "run", str(media.video), str(media.dub), "--engine",
                           "passthrough", "--preset", "ultrafast", "--no-qc", "--store", str(store), "--job-id", job_id,
                           "--quiet"], capture_output=True, text=True, env={**base, **env}, timeout=600)


@pytest.mark.integration
def test_a_running_local_server_is_reused_and_keeps_the_run(media, tmp_path):
    server = start_prefect_server(tmp_path / "server-home", tmp_path / "server.log")
    try:
        home = tmp_path / "home"
        before = _server_processes(home)
        proc = _run(media, tmp_path / "store", "reuse-1", {"LIPLINE_LOCAL_API_URL": server.api,
                                                          "PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        assert _server_processes(home) == before, "a temporary server was started although one was running"
        runs = prefect_http.post(f"{server.api}/flow_runs/filter", json={}).json()
        flows = {f["id"]: f["name"] for f in prefect_http.post(f"{server.api}/flows/filter", json={}).json()}
        assert [(flows[r["flow_id"]], r["state_type"]) for r in runs] == [("localize", "COMPLETED")]
        logs = prefect_http.post(f"{server.api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
        assert any("reuse-1" in entry["message"] for entry in logs.json()), "the run's logs did not reach the server"
        assert prefect_http.get(f"{server.api}/health").json() is True  # still serving
    finally:
        server.stop()


@pytest.mark.integration
def test_without_an_api_the_temporary_server_is_started_early_and_stopped_cleanly(media, tmp_path):
    home = tmp_path / "home"
    before = _server_processes(home)
    proc = _run(media, tmp_path / "store", "temp-1", {"LIPLINE_LOCAL_API_URL": "off", "PREFECT_LOGGING_LEVEL": "INFO",
                                                       "PREFECT_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert "Starting temporary server" not in proc.stderr  # Prefect did not start one of its own after the imports
    assert "Beginning flow run" in proc.stderr and "Finished in state Completed" in proc.stderr
    assert "Error logging to API" not in proc.stderr and "Traceback" not in proc.stderr
    assert _server_processes(home) == before, "the temporary server outlived the run"
    assert (home / "prefect.db").exists()  # the run's records: in this PREFECT_HOME's database


@pytest.mark.integration
def test_a_killed_run_takes_its_temporary_server_with_it(media, tmp_path):
    home = tmp_path / "home"
    before = _server_processes(home)
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "lipline.cli", "run", str(media.video), str(media.dub), "--engine",
                             "passthrough", "--store", str(tmp_path / "store"), "--quiet"],
                            env={**base, "LIPLINE_LOCAL_API_URL": "off", "PREFECT_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _server_processes(home) - before:
        assert time.monotonic() < deadline and proc.poll() is None, "no temporary server was started"
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no atexit, no finally
    proc.wait()
    deadline = time.monotonic() + 30
    while _server_processes(home) - before:
        assert time.monotonic() < deadline, "the temporary server outlived a killed run"
        time.sleep(0.2)


EXIT_NOW_SCRIPT = """
import multiprocessing, sys, time
from lipline.local_api import exit_now

def sleeper(path):
    time.sleep(60)
    open(path, "w").write("outlived")

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=sleeper, args=(sys.argv[1],))
    child.start()
    print(child.pid, end="")          # buffered: exit_now must flush it
    sys.stderr.write("on stderr")
    exit_now(3)
"""


def test_exit_now_keeps_the_exit_status_and_the_output_and_ends_the_children(tmp_path):
    script = tmp_path / "exit_now_demo.py"
    script.write_text(EXIT_NOW_SCRIPT)
    marker = tmp_path / "child-outlived"
    proc = subprocess.run([sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONUNBUFFERED": ""})
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.isdigit() and proc.stderr.endswith("on stderr")
    child = int(proc.stdout)
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
    assert not marker.exists()
