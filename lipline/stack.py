"""`lipline stack up|down|status` and `lipline deploy`: the whole deployment on one machine, and deploying anywhere.

`up` starts, each in its own session so they outlive the command and its Ctrl-C:

1. SeaweedFS (`weed mini`) as the S3 store, bucket `lipline`, credentials generated once per state dir;
2. `prefect server start` on 127.0.0.1 with its own `PREFECT_HOME` (SQLite) under the state dir;
3. work pools `cpu` and `gpu` (type process, with concurrency limits) and the deployments of
   `deployments/prefect.yaml` (`prefect deploy --all`, `LIPLINE_CHECKOUT` unset: see deployments/README.md);
4. one `cpu` worker (`--limit cpu_jobs`) and N GPU workers, `CUDA_VISIBLE_DEVICES=i` for the i-th one when
   `nvidia-smi` lists GPUs, else on CPU. With `--gpu-backend task-workers` (the default) they are warm
   `lipline gpu-worker` processes (Prefect task workers: the model loaded once per worker, every segment of every
   job fanned out over them; the cpu worker's flow runs get `LIPLINE_GPU_BACKEND=task-workers`); with
   `--gpu-backend deployment` they are process workers on the `gpu` pool (`--limit 1` each: a fresh process, a
   model load, per run of `lipsync-segments/gpu`). The `gpu` pool and that deployment exist either way;
5. small sample inputs in the store, so the printed `curl` line starts a real job as it is.

Everything about a running stack (pids, ports, URLs, credentials, logs) is in `STATE_DIR/state.json`; `status` and
`down` read it. `down` stops the workers first (SIGINT to their process group, SIGTERM then SIGKILL after a timeout),
then the server and SeaweedFS, and kills whatever is left in their sessions (flow-run subprocesses).
Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lipline import PREFECT_ENV_DEFAULTS
from lipline.errors import LiplineError
from lipline.seaweed import port_is_free, start_seaweedfs

STATE_FILE = "state.json"
BUCKET = "lipline"
LOCALIZE = ("localize", "localize")          # flow name, deployment name (deployments/prefect.yaml)
GPU_DEPLOYMENT = "lipsync-segments/gpu"
GPU_BACKENDS = ("task-workers", "deployment")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class StackError(LiplineError):
    """A stack command cannot do what was asked (port busy, binary missing, server not healthy, ...)."""


def default_state_dir() -> Path:
    """LIPLINE_STACK_DIR (settings), default ./.lipline-stack."""
    from lipline.settings import get_settings

    return Path(get_settings().stack_dir).absolute()


def prefect_exe() -> str:
    exe = Path(sys.executable).parent / "prefect"
    found = str(exe) if exe.exists() else shutil.which("prefect")
    if not found:
        raise StackError("the `prefect` command was not found next to this Python or on PATH: pip install prefect")
    return found


def find_checkout(checkout: str | Path | None = None) -> Path:
    """The source checkout with deployments/prefect.yaml: the argument, else LIPLINE_CHECKOUT (settings), else the
    one this package was installed from (editable install), else the current directory."""
    from lipline.settings import get_settings

    given = checkout or get_settings().checkout
    candidates = [given] if given else [Path(__file__).resolve().parents[1], Path.cwd()]
    for candidate in candidates:
        if (Path(candidate) / "deployments" / "prefect.yaml").is_file():
            return Path(candidate).resolve()
    where = f"{given}" if given else "this installation or the current directory"
    raise StackError(f"no deployments/prefect.yaml in {where}: pass --checkout with a Lipline source checkout")


def gpu_count() -> int:
    """GPUs `nvidia-smi -L` lists (0 without the NVIDIA driver). No torch import."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


# --- processes ------------------------------------------------------------------------------------------------------

def _start_ticks(pid: int) -> str | None:
    """When `pid` started (tells a reused pid apart); None when it does not exist."""
    from lipline.joblock import process_start  # lazy: it imports the store (fsspec)

    return process_start(pid)


def _alive(pid: int, ticks: str | None = None) -> bool:
    """`pid` runs and is the process that started at `ticks` (a zombie counts as finished)."""
    from lipline.joblock import process_running

    return process_running(pid, ticks)


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (each stack process leads its own session; its children stay in it)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_process(pid: int, ticks: str | None, first: int = signal.SIGINT, timeout: float = 20.0) -> str:
    """Stop a process and its process group: `first`, then SIGTERM and SIGKILL after `timeout` s each. Returns how."""
    if not _alive(pid, ticks):
        return "not running"
    how = signal.Signals(first).name
    for sig in dict.fromkeys((first, signal.SIGTERM, signal.SIGKILL)):  # in this order, each once
        how = signal.Signals(sig).name
        _signal_group(pid, sig)
        deadline = time.monotonic() + (timeout if sig != signal.SIGKILL else 10)
        while time.monotonic() < deadline and _alive(pid, ticks):
            time.sleep(0.2)
        if not _alive(pid, ticks):
            break
    for member in session_members(pid):  # flow-run subprocesses that left the group but not the session
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return f"stopped ({how})"


# --- state ----------------------------------------------------------------------------------------------------------

@dataclass
class StackProcess:
    name: str
    pid: int
    ticks: str | None
    log: str
    cmd: list[str]

    @property
    def alive(self) -> bool:
        return _alive(self.pid, self.ticks)


@dataclass
class StackState:
    dir: Path
    api_url: str
    ui_url: str
    store: str
    s3_endpoint: str
    access_key: str
    secret_key: str
    gpu_workers: int
    gpus: int
    gpu_backend: str = "task-workers"
    processes: list[StackProcess] = field(default_factory=list)
    curl: str = ""
    samples: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.dir / STATE_FILE

    def save(self) -> None:
        data = {k: v for k, v in self.__dict__.items() if k not in ("dir", "processes")}
        data["processes"] = [p.__dict__ for p in self.processes]
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the store credentials
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        tmp.replace(self.path)
        self.env_file().write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.client_env().items()))

    @classmethod
    def load(cls, state_dir: Path) -> "StackState | None":
        try:
            data = json.loads((state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StackError(f"{state_dir / STATE_FILE}: unreadable stack state ({exc}); remove it after checking "
                             "that no stack processes are left") from None
        processes = [StackProcess(**p) for p in data.pop("processes", [])]
        return cls(dir=state_dir, processes=processes, **data)

    def env_file(self) -> Path:
        return self.dir / "stack.env"

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def client_env(self) -> dict[str, str]:
        """What a shell needs to use this stack: `source STATE_DIR/stack.env`."""
        return {"PREFECT_API_URL": self.api_url, "LIPLINE_STORE": self.store, **self.s3_env()}

    def process(self, name: str) -> StackProcess | None:
        return next((p for p in self.processes if p.name == name), None)


# --- Prefect API helpers --------------------------------------------------------------------------------------------

def _client(api_url: str):
    from lipline.prefect_http import api_client

    return api_client(api_url)


def api_healthy(api_url: str) -> bool:
    import httpx

    try:
        with _client(api_url) as client:
            return client.get("/health").is_success
    except httpx.HTTPError:
        return False


def _wait_healthy(api_url: str, server: StackProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive:
            raise StackError(f"prefect server exited at start; see {server.log}: {_last_line(Path(server.log))}")
        if api_healthy(api_url):
            return
        time.sleep(0.5)
    raise StackError(f"prefect server not healthy after {timeout:.0f}s; see {server.log}")


def ensure_pools(api_url: str, limits: dict[str, int | None]) -> None:
    """Create the process work pools (Prefect's default process job template) or set their concurrency limits
    (None: no limit for a new pool, leave an existing pool as it is)."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with _client(api_url) as client:
        for name, limit in limits.items():
            r = client.post("/work_pools/", json={"name": name, "type": "process", "base_job_template": template,
                                                 "concurrency_limit": limit})
            if r.status_code == 409:  # already there: set the limit if one was asked for
                if limit is None:
                    continue
                r = client.patch(f"/work_pools/{name}", json={"concurrency_limit": limit})
            if not r.is_success:
                raise StackError(f"work pool {name!r}: the API answered {r.status_code}: {r.text[:200]}")


def yaml_pools(checkout: str | Path | None = None, prefect_file: str = "deployments/prefect.yaml") -> list[str]:
    """The work pools the deployments of PREFECT_FILE use (`prefect deploy` refuses a pool that does not exist)."""
    import yaml

    path = find_checkout(checkout) / prefect_file
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from None
    names = [(d.get("work_pool") or {}).get("name") for d in config.get("deployments") or []]
    return list(dict.fromkeys(n for n in names if n))


def deployment_id(api_url: str, flow: str, deployment: str) -> str:
    with _client(api_url) as client:
        r = client.get(f"/deployments/name/{flow}/{deployment}")
    if r.status_code == 404:
        raise StackError(f"deployment {flow}/{deployment} not found at {api_url}: run `lipline deploy` first")
    r.raise_for_status()
    return r.json()["id"]


def deploy(api_url: str | None = None, checkout: str | Path | None = None, prefect_file: str = "deployments/prefect.yaml",
           log: Path | None = None, env: dict[str, str] | None = None) -> list[str]:
    """`prefect --no-prompt deploy --all --prefect-file PREFECT_FILE` from the checkout against `api_url` (default:
    PREFECT_API_URL), with LIPLINE_CHECKOUT unset so the workers resolve the pull step's `{{ $LIPLINE_CHECKOUT }}`.
    Returns the deployment names (flow/deployment) the API has afterwards."""
    root = find_checkout(checkout)
    if not (root / prefect_file).is_file():
        raise StackError(f"{root / prefect_file}: no such file")
    run_env = {**os.environ, **PREFECT_ENV_DEFAULTS, **(env or {})}
    run_env.pop("LIPLINE_CHECKOUT", None)
    api_url = api_url or run_env.get("PREFECT_API_URL")
    if not api_url:
        raise StackError("no Prefect API: pass --api http://HOST:4200/api or set PREFECT_API_URL "
                         "(`lipline stack up` starts one)")
    run_env["PREFECT_API_URL"] = api_url
    if not api_healthy(api_url):
        raise StackError(f"the Prefect API at {api_url} does not answer /health: start the server or fix the URL")
    try:
        done = subprocess.run([prefect_exe(), "--no-prompt", "deploy", "--all", "--prefect-file", prefect_file],
                              cwd=root, env=run_env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise StackError("prefect deploy did not finish within 10 minutes") from None
    output = done.stdout + done.stderr
    if log is not None:
        log.write_text(output)
    if done.returncode:
        tail = [line for line in output.splitlines() if line.strip()][-1:] or ["(no output)"]
        raise StackError(f"prefect deploy failed (status {done.returncode}): {tail[0].strip()[:300]}"
                         + (f"; full output in {log}" if log else ""))
    with _client(api_url) as client:
        r = client.post("/deployments/filter", json={"limit": 200})
        r.raise_for_status()
        flows = {f["id"]: f["name"] for f in client.post("/flows/filter", json={"limit": 200}).json()}
    return sorted(f"{flows.get(d['flow_id'], '?')}/{d['name']}" for d in r.json())


# --- up / down / status ---------------------------------------------------------------------------------------------

def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip()[-300:] if lines else "(empty log)"


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. `up` started with SIGINT ignored (``nohup … &``, some
    service managers) would pass the ignore on, and `down`'s SIGINT would wait out its timeout before SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path, cwd: Path) -> StackProcess:
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,  # own session: survives this command and its Ctrl-C
                                preexec_fn=_default_sigint if os.name == "posix" else None)
    return StackProcess(name, proc.pid, _start_ticks(proc.pid), str(log), cmd)


def _credentials(state_dir: Path) -> tuple[str, str]:
    """Store credentials generated on the first `up` and kept (with the data) across `down`/`up`."""
    path = state_dir / "s3-credentials.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["access_key"], data["secret_key"]
    access, secret = "lipline-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_key": access, "secret_key": secret}, f)
    return access, secret


def _upload_samples(state: StackState) -> dict[str, str]:
    """Small sample inputs (6 s talking head, 6.5 s dub) in the store for the printed curl line, made once."""
    import s3fs

    folder = state.dir / "samples"
    video, audio = folder / "talk.mp4", folder / "dub.wav"
    if not (video.exists() and audio.exists()):
        from lipline import samples

        folder.mkdir(parents=True, exist_ok=True)
        face = samples.face_png(folder / "face.png")
        original = samples.write_audio(folder / "original.wav", samples.speech_like(6.0, seed=3))
        samples.write_audio(audio, samples.speech_like(6.5, seed=7))
        samples.talking_video(video, face, 6.0, 640, 360, 25, audio=original)
    fs = s3fs.S3FileSystem(key=state.access_key, secret=state.secret_key,
                           client_kwargs={"endpoint_url": state.s3_endpoint}, skip_instance_cache=True)
    uris = {}
    for role, path in (("video_uri", video), ("audio_uri", audio)):
        key = f"{BUCKET}/samples/{path.name}"
        fs.put_file(str(path), key)
        uris[role] = f"s3://{key}"
    return uris


CURL_OPTIONS = "-sS -f --retry 6 --retry-max-time 60"
"""Quiet but with errors. A busy server (503 with ``Retry-After`` when its SQLite database is locked or its connection
pool is full, 429, 502, 504) is asked again: such a create was never stored. ``-f``: an HTTP error exits 22 with the
status on stderr and prints no body, so stdout is the created run's JSON or nothing (without ``-f`` curl also writes
the body of every answer it retries; ``--fail-with-body`` does the same)."""


def curl_line(api_url: str, deployment: str, params: dict) -> str:
    """The shell line that starts a run of `deployment` with `params`, as ``stack up`` prints it."""
    body = json.dumps({"parameters": {"params": params}})
    return (f"curl {CURL_OPTIONS} -X POST {api_url}/deployments/{deployment}/create_flow_run "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


def _wait_workers(state: StackState, expected: dict[str, int], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            online = pool_workers(state.api_url)
        except httpx.HTTPError:
            online = {}
        missing = {pool: n for pool, n in expected.items() if pool != "task-workers"
                   and sum(1 for w in online.get(pool, []) if w["status"] == "ONLINE") < n}
        if expected.get("task-workers"):
            try:
                if gpu_workers_online(state.api_url, state.processes) < expected["task-workers"]:
                    missing["task-workers"] = expected["task-workers"]
            except httpx.HTTPError:
                missing["task-workers"] = expected["task-workers"]
        if not missing:
            return
        for p in state.processes:
            if not p.alive:
                raise StackError(f"{p.name} exited at start; see {p.log}: {_last_line(Path(p.log))}")
        if time.monotonic() > deadline:
            raise StackError(f"workers not online after {timeout:.0f}s ({', '.join(sorted(missing))}); see "
                             f"{state.dir / 'logs'}")
        time.sleep(1)


def task_workers(api_url: str) -> list[dict]:
    """The Prefect task workers connected to the API: [{identifier (host-pid), task_keys}]."""
    with _client(api_url) as client:
        r = client.post("/task_workers/filter", json={})
        r.raise_for_status()
        return [{"identifier": w["identifier"], "task_keys": sorted(w.get("task_keys") or [])} for w in r.json()]


def gpu_workers_online(api_url: str, processes: list[StackProcess]) -> int:
    """How many of the stack's `lipline gpu-worker` processes are connected to the API (by their host-pid id)."""
    connected = {w["identifier"] for w in task_workers(api_url)}
    host = socket.gethostname()
    return sum(1 for p in processes if p.name.startswith("gpu-worker") and f"{host}-{p.pid}" in connected)


def pool_workers(api_url: str) -> dict[str, list[dict]]:
    """{pool: [{name, status, last_heartbeat_time}]} for the cpu and gpu pools (missing pools are absent)."""
    pools: dict[str, list[dict]] = {}
    with _client(api_url) as client:
        for name in ("cpu", "gpu"):
            r = client.post(f"/work_pools/{name}/workers/filter", json={})
            if r.is_success:
                pools[name] = [{"name": w["name"], "status": w.get("status"),
                                "last_heartbeat_time": w.get("last_heartbeat_time")} for w in r.json()]
    return pools


@dataclass
class UpOptions:
    state_dir: Path
    port: int = 4200
    s3_port: int = 8333
    gpu_workers: int = 1
    cpu_jobs: int = 4
    checkout: str | None = None
    query_seconds: int = 5
    samples: bool = True
    timeout: float = 180.0
    gpu_backend: str = "task-workers"


def gpu_worker_commands(opts: UpOptions, gpus: int, prefect: str, host: str) -> list[tuple[str, list[str], dict]]:
    """(name, command, extra environment) of each GPU worker `up` starts: warm `lipline gpu-worker` processes
    (task-workers) or process workers on the `gpu` pool (deployment); pinned to GPU i-1 when there are GPUs."""
    workers = []
    for i in range(opts.gpu_workers):
        env = {"CUDA_VISIBLE_DEVICES": str(i)} if gpus else {}  # pinned to its card; else on CPU
        if opts.gpu_backend == "task-workers":
            workers.append((f"gpu-worker-{i + 1}", [sys.executable, "-m", "lipline.cli", "gpu-worker"], env))
        else:
            workers.append((f"worker-gpu-{i + 1}", [prefect, "worker", "start", "--pool", "gpu", "--name",
                                                    f"gpu-{host}-{i + 1}", "--limit", "1"], env))
    return workers


def cpu_backend_env(opts: UpOptions) -> dict[str, str]:
    """How the cpu worker's flow runs reach the engine: the warm GPU workers, the `gpu` deployment, or (no GPU
    workers at all) in the flow's own process."""
    if opts.gpu_workers == 0:
        return {"LIPLINE_GPU_BACKEND": "in-process"}
    return {"LIPLINE_GPU_BACKEND": opts.gpu_backend}


def up(opts: UpOptions, say=print) -> tuple[StackState, bool]:
    """Start the stack (see the module docstring). Returns (state, started): started is False when it was up already."""
    if opts.gpu_backend not in GPU_BACKENDS:
        raise StackError(f"--gpu-backend {opts.gpu_backend!r}: choose one of {', '.join(GPU_BACKENDS)}")
    state_dir = opts.state_dir.absolute()
    existing = StackState.load(state_dir)
    if existing is not None:
        if all(p.alive for p in existing.processes) and api_healthy(existing.api_url):
            return existing, False
        say(f"a previous stack in {state_dir} is partly down: stopping what is left of it")
        down(state_dir, say=lambda *_: None)
    if opts.gpu_workers < 0 or opts.cpu_jobs < 1:
        raise StackError("--gpu-workers must be >= 0 and --cpu-jobs >= 1")
    gpus = gpu_count()
    if gpus and opts.gpu_workers > gpus:
        raise StackError(f"--gpu-workers {opts.gpu_workers} but nvidia-smi lists {gpus} GPU(s): one worker per GPU")
    for port, what, flag in ((opts.port, "Prefect API/UI", "--port"), (opts.s3_port, "S3 API", "--s3-port")):
        if not port_is_free(port):
            raise StackError(f"port {port} ({what}) is already in use: stop what uses it or pick another with {flag}")
    root = find_checkout(opts.checkout)
    prefect = prefect_exe()
    logs, home = state_dir / "logs", state_dir / "prefect-home"
    logs.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (state_dir / ".gitignore").write_text("*\n")  # a state dir inside a checkout is never committed
    access, secret = _credentials(state_dir)
    api_url = f"http://127.0.0.1:{opts.port}/api"
    state = StackState(dir=state_dir, api_url=api_url, ui_url=f"http://127.0.0.1:{opts.port}",
                       store=f"s3://{BUCKET}/jobs", s3_endpoint="", access_key=access, secret_key=secret,
                       gpu_workers=opts.gpu_workers, gpus=gpus, gpu_backend=opts.gpu_backend)
    try:
        say(f"starting SeaweedFS (S3 API on 127.0.0.1:{opts.s3_port}) ...")
        s3 = start_seaweedfs(state_dir / "seaweed", bucket=BUCKET, access_key=access, secret_key=secret,
                             s3_port=opts.s3_port, detach=True, timeout=60)
        state.s3_endpoint = s3.endpoint
        state.processes.append(StackProcess("seaweedfs", s3.pid, _start_ticks(s3.pid), str(s3.log),
                                            [str(a) for a in s3.process.args]))
        state.save()

        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
        base_env.pop("LIPLINE_CHECKOUT", None)
        base_env.update({**PREFECT_ENV_DEFAULTS, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
                         "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO")})
        for key in ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
            if key in os.environ:
                base_env[key] = os.environ[key]
        say(f"starting the Prefect server on {state.ui_url} ...")
        server = _spawn("server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(opts.port)],
                        base_env, logs, state_dir)
        state.processes.append(server)
        state.save()
        _wait_healthy(api_url, server, opts.timeout)

        ensure_pools(api_url, {**dict.fromkeys(yaml_pools(root)), "cpu": opts.cpu_jobs,
                               "gpu": max(opts.gpu_workers, 1)})
        say("deploying deployments/prefect.yaml ...")
        deploy(api_url, root, log=logs / "deploy.log", env={"PREFECT_HOME": str(home), "LIPLINE_STORE": state.store})

        worker_env = {**base_env, **state.s3_env(), "LIPLINE_CHECKOUT": str(root), "LIPLINE_STORE": state.store,
                      "PREFECT_WORKER_QUERY_SECONDS": str(opts.query_seconds),
                      "PREFECT_WORKER_PREFETCH_SECONDS": str(opts.query_seconds)}
        host = os.uname().nodename.split(".")[0]
        state.processes.append(_spawn("worker-cpu", [prefect, "worker", "start", "--pool", "cpu", "--name",
                                                     f"cpu-{host}", "--limit", str(opts.cpu_jobs)],
                                      {**worker_env, **cpu_backend_env(opts)}, logs, state_dir))
        for name, cmd, extra in gpu_worker_commands(opts, gpus, prefect, host):
            state.processes.append(_spawn(name, cmd, {**worker_env, **extra}, logs, state_dir))
        state.save()
        say(f"waiting for {1 + opts.gpu_workers} worker(s) ...")
        gpu_kind = "task-workers" if opts.gpu_backend == "task-workers" else "gpu"
        _wait_workers(state, {"cpu": 1, gpu_kind: opts.gpu_workers}, opts.timeout)

        params = {"x264_preset": "ultrafast"}
        if opts.samples:
            say("uploading sample inputs ...")
            state.samples = _upload_samples(state)
            params = {**state.samples, **params}
        else:
            params = {"video_uri": f"s3://{BUCKET}/inputs/talk.mp4", "audio_uri": f"s3://{BUCKET}/inputs/dub.wav",
                      **params}
        state.curl = curl_line(api_url, deployment_id(api_url, *LOCALIZE), params)
        state.save()
    except BaseException:
        down(state_dir, say=lambda *_: None)
        raise
    return state, True


def down(state_dir: Path, timeout: float = 20.0, say=print) -> bool:
    """Stop the stack in STATE_DIR: workers (SIGINT), then the server (SIGINT), then SeaweedFS (SIGTERM).
    Returns False when there was no stack state."""
    state = StackState.load(state_dir.absolute())
    if state is None:
        return False
    order = sorted(state.processes, key=lambda p: (not p.name.startswith(("worker", "gpu-worker")),
                                                   p.name == "seaweedfs"))
    for p in order:
        first = signal.SIGTERM if p.name == "seaweedfs" else signal.SIGINT
        say(f"{p.name:14} pid {p.pid:<7} {stop_process(p.pid, p.ticks, first, timeout)}")
    state.path.unlink(missing_ok=True)
    state.env_file().unlink(missing_ok=True)
    return True


@dataclass
class StackStatus:
    state: StackState
    processes: dict[str, bool]
    healthy: bool
    pools: dict[str, list[dict]]
    task_workers: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.healthy and all(self.processes.values())


def status(state_dir: Path) -> StackStatus | None:
    state = StackState.load(state_dir.absolute())
    if state is None:
        return None
    healthy = api_healthy(state.api_url)
    import httpx

    try:
        pools = pool_workers(state.api_url) if healthy else {}
        serving = task_workers(state.api_url) if healthy else []
    except httpx.HTTPError:
        pools, serving = {}, []
    return StackStatus(state, {p.name: p.alive for p in state.processes}, healthy, pools, serving)


# --- notifications --------------------------------------------------------------------------------------------------

WEBHOOK_PAYLOAD = ('{"event": "{{ event.event }}", "state": "{{ event.resource.get(\'prefect.state-name\') }}", '
                   '"flow_run_id": "{{ event.resource.id.removeprefix(\'prefect.flow-run.\') }}", '
                   '"flow_run_name": "{{ event.resource.get(\'prefect.resource.name\') }}", '
                   '"flow": "{{ flow.name if flow else \'\' }}", '
                   '"job_id": {{ (flow_run.parameters.get(\'params\') or {}).get(\'job_id\') | tojson }}, '
                   '"occurred": "{{ event.occurred }}"}')


def add_webhook_automation(url: str, api_url: str | None = None, flow: str = "localize", name: str | None = None,
                           states: tuple[str, ...] = ("Completed", "Failed", "Crashed")) -> str:
    """A `Webhook` block posting JSON to `url` and an automation calling it when a run of `flow` ends in one of
    `states` (events `prefect.flow-run.<State>`). Needs the server's triggers service (on by default:
    PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED). Returns the automation id."""
    api_url = api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise StackError("no Prefect API: pass --api or set PREFECT_API_URL")
    if not api_healthy(api_url):
        raise StackError(f"the Prefect API at {api_url} does not answer /health")
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.automations import Automation, CallWebhook, EventTrigger, Posture
    from prefect.blocks.webhook import Webhook

    name = name or f"lipline-{flow}-webhook"
    block = Webhook(method="POST", url=url, headers={"Content-Type": "application/json"})
    block_id = block.save(f"{name}", overwrite=True)
    while (existing := _automation_named(name)) is not None:  # re-running replaces it
        existing.delete()
    automation = Automation(
        name=name,
        description=f"POST a JSON notice to {url} when a `{flow}` flow run ends ({', '.join(states)})",
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{s}" for s in states},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": flow},
            posture=Posture.Reactive, threshold=1, within=0,
        ),
        actions=[CallWebhook(block_document_id=block_id, payload=WEBHOOK_PAYLOAD)],
    ).create()
    return str(automation.id)


def _automation_named(name: str):
    from prefect.automations import Automation

    try:
        return Automation.read(name=name)
    except ValueError:  # "Automation with name ... not found"
        return None
