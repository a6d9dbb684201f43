"""The object store: a local folder by default, any fsspec URI otherwise (``s3://bucket/prefix`` for S3 APIs).

Every upload is verified by SHA-256: on S3 the checksum travels with the request (``ChecksumSHA256``, checked
by the server) and is read back with ``HeadObject``; elsewhere the stored bytes are read back and hashed.
Multipart ETags are not MD5s, so ETags are never used for verification. How each kind of root writes is its
backend's business (`lipline.store_backends`, chosen by scheme in one table).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from lipline.errors import StoreError, one_line
from lipline.settings import get_settings
from lipline.store_backends import Backend, backend_for
from lipline.uris import sha256_file


@dataclass(frozen=True)
class StoredFile:
    key: str
    uri: str
    sha256: str
    size: int


class Store:
    """A job-oriented view of one store root. Keys are relative (``<job_id>/final.mp4``).

    S3 endpoint and credentials come from `lipline.settings` (``LIPLINE_S3_*``, then the AWS variables), as
    for every other S3 access."""

    def __init__(self, root: str) -> None:
        self.root = str(root).rstrip("/")
        self.backend: Backend = backend_for(self.root)
        self.fs, self.base, self.local = self.backend.fs, self.backend.base, self.backend.local

    @classmethod
    def from_settings(cls, root: str | None = None) -> Store:
        """The store at `root`, else at ``LIPLINE_STORE`` (`Settings.store`)."""
        return cls(root or get_settings().store)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def uri(self, key: str) -> str:
        return self.backend.uri(key)

    def _path(self, key: str) -> str:
        return self.backend.path(key)

    def exists(self, key: str) -> bool:
        try:
            return self.fs.exists(self._path(key))
        except (OSError, PermissionError) as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc

    def check_writable(self, key_prefix: str) -> None:
        """Fail fast (before any work) when the store refuses writes under `key_prefix`."""
        probe = f"{key_prefix}/.write-probe-{uuid.uuid4().hex[:12]}"  # own key: concurrent probes never collide
        try:
            self.backend.write_bytes(b"ok", probe)
            self.fs.rm(self._path(probe))
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend error means "not writable"; reported with its text
            raise StoreError(f"the store {self.root} refuses writes under {key_prefix}/: {one_line(exc)}; "
                             f"{self.backend.write_hint}") from exc

    def put_file(self, local: Path, key: str) -> StoredFile:
        """Upload `local` to `key` and verify the stored bytes by SHA-256. Readers never see a partial `key`
        (see `lipline.store_backends` for how each backend ensures it)."""
        size = local.stat().st_size
        digest = None if self.backend.hashes_while_writing else sha256_file(local)
        try:
            digest = self.backend.write_file(local, key, digest, size) or digest
        except (OSError, PermissionError) as exc:
            raise StoreError(f"upload of {local.name} to {self.uri(key)} failed: {exc}") from exc
        try:
            self.backend.verify(key, digest)
        except (OSError, PermissionError) as exc:
            raise StoreError(f"cannot read back {self.uri(key)}: {exc}") from exc
        return StoredFile(key=key, uri=self.uri(key), sha256=digest, size=size)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` holding `data` unless it exists: True when this call created it, False when the key was
        already there (its content is left alone). Atomic — of several racing callers exactly one gets True — on
        local folders (hard link of a complete temporary file) and on S3 (``PutObject`` with
        ``If-None-Match: *``; checked against SeaweedFS). Other fsspec backends have no exclusive create: there
        it is check-then-write and not race-free (`FsspecBackend.create`)."""
        try:
            return self.backend.create(key, data)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend error: the key may or may not exist; say which key
            raise StoreError(f"could not create {self.uri(key)}: {one_line(exc)}") from exc

    def put_json(self, obj: object, key: str) -> StoredFile:
        data = json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(key).name
            path.write_bytes(data)
            return self.put_file(path, key)

    def read_json(self, key: str) -> dict:
        with self.fs.open(self._path(key), "rb") as f:
            return json.load(f)

    def delete(self, key: str) -> None:
        """Remove `key`; missing is fine. A delete the store refuses raises `StoreError` (never swallowed)."""
        self._remove(key, recursive=False)

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under `prefix` (a job's folder or its intermediates); missing is fine."""
        self._remove(prefix, recursive=True)

    def _remove(self, key: str, *, recursive: bool) -> None:
        try:
            if self.fs.exists(self._path(key)):
                self.fs.rm(self._path(key), recursive=recursive)
        except Exception as exc:  # noqa: BLE001 - any backend error: the key may still be there, say so
            raise StoreError(f"could not delete {self.uri(key)}{'/' if recursive else ''}: {one_line(exc)}; "
                             "remove it by hand or check the store's permissions") from exc
