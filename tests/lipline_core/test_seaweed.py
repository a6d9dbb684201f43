"""`lipline/seaweed.py`: SeaweedFS on loopback, every listener on a port chosen here."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import s3fs

from lipline.seaweed import start_seaweedfs


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (/proc: its socket inodes, then the LISTEN rows that own them)."""
    fds = Path(f"/proc/{pid}/fd")
    inodes = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_two_servers_run_side_by_side_with_no_fixed_port(tmp_path):
    """Two test workers (`pytest -n 2`), or two `lipline stack up`, each start one: SeaweedFS 4.48's `weed mini` also
    opened an Iceberg catalog on 8181 and a Lance server on 9101, and the second server died at start."""
    first = start_seaweedfs(tmp_path / "a")
    try:
        second = start_seaweedfs(tmp_path / "b")
        try:
            for server in (first, second):
                ports = _listening_ports(server.process.pid)
                assert ports and not ports & {8181, 9101, 8333, 8888, 9333, 23646}, sorted(ports)
                fs = s3fs.S3FileSystem(key=server.access_key, secret=server.secret_key,
                                       client_kwargs={"endpoint_url": server.endpoint}, skip_instance_cache=True)
                fs.pipe(f"{server.bucket}/hello.txt", server.endpoint.encode())
                assert fs.cat(f"{server.bucket}/hello.txt") == server.endpoint.encode()
            assert _listening_ports(first.process.pid).isdisjoint(_listening_ports(second.process.pid))
        finally:
            second.stop()
    finally:
        first.stop()
