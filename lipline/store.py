"""The object store: a local folder by default, any fsspec URI otherwise (``s3://bucket/prefix`` for S3 APIs).

Every upload is verified by SHA-256: on S3 the checksum travels with the request (``ChecksumSHA256``, checked
by the server) and is read back with ``HeadObject``; elsewhere the stored bytes are read back and hashed.
Multipart ETags are not MD5s, so ETags are never used for verification.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec

from lipline.errors import StoreError, one_line
from lipline.uris import filesystem, is_local, sha256_file, to_path

SINGLE_PUT_LIMIT = 5 * 2**30 - 1  # S3 PutObject limit; below it one request carries the checksum


@dataclass(frozen=True)
class StoredFile:
    key: str
    uri: str
    sha256: str
    size: int


class Store:
    """A job-oriented view of one store root. Keys are relative (``<job_id>/final.mp4``)."""

    def __init__(self, root: str, *, s3_endpoint_url: str | None = None) -> None:
        self.root = str(root).rstrip("/")
        self.local = is_local(self.root)
        options: dict = {}
        if self.root.startswith("s3://"):
            endpoint = s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["client_kwargs"] = {"endpoint_url": endpoint}
        if self.local:
            self.fs = fsspec.filesystem("file")
            self.base = str(to_path(self.root))
        else:
            self.fs, self.base = filesystem(self.root, "store", **options)
        self.base = self.base.rstrip("/")

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def uri(self, key: str) -> str:
        return f"{self.base}/{key}" if self.local else f"{self.root}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def exists(self, key: str) -> bool:
        try:
            return self.fs.exists(self._path(key))
        except (OSError, PermissionError) as exc:
            raise StoreError(f"cannot read {self.uri(key)}: {exc}") from exc

    def check_writable(self, key_prefix: str) -> None:
        """Fail fast (before any work) when the store refuses writes under `key_prefix`."""
        probe = f"{key_prefix}/.write-probe"
        try:
            self._put_bytes(b"ok", probe)
            self.fs.rm(self._path(probe))
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - any backend error means "not writable"; reported with its text
            raise StoreError(f"the store {self.root} refuses writes under {key_prefix}/: {one_line(exc)}; check its "
                             "address, credentials (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) "
                             "and permissions") from exc

    def put_file(self, local: Path, key: str) -> StoredFile:
        """Upload `local` to `key` and verify the stored bytes by SHA-256. Readers never see a partial `key`:
        local files are renamed into place, S3 objects appear whole (one request), any other backend gets a
        temporary key that is verified and then moved to `key`."""
        digest = sha256_file(local)
        size = local.stat().st_size
        target = self._path(key)
        try:
            if self.local:
                self._put_local(local, Path(target))
            elif self.root.startswith("s3://") and size <= SINGLE_PUT_LIMIT:
                checksum = base64.b64encode(binascii.unhexlify(digest)).decode()
                self.fs.put_file(str(local), target, chunksize=SINGLE_PUT_LIMIT, ChecksumSHA256=checksum)
            else:
                self._put_via_temporary_key(local, key, digest)
        except (OSError, PermissionError) as exc:
            raise StoreError(f"upload of {local.name} to {self.uri(key)} failed: {exc}") from exc
        stored = self._stored_sha256(key)
        if stored != digest:
            raise StoreError(f"checksum mismatch after upload of {self.uri(key)}: local {digest}, stored {stored}")
        return StoredFile(key=key, uri=self.uri(key), sha256=digest, size=size)

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

    def _put_via_temporary_key(self, local: Path, key: str, digest: str) -> None:
        """Upload to a temporary key beside `key`, verify it, then move it to `key` (the backend's rename or
        copy); the temporary key is removed whatever happens."""
        temp = f"{key}.part-{uuid.uuid4().hex[:12]}"
        try:
            self.fs.put_file(str(local), self._path(temp))
            stored = self._stored_sha256(temp)
            if stored != digest:
                raise StoreError(f"checksum mismatch after upload of {self.uri(temp)}: local {digest}, stored {stored}")
            self.fs.mv(self._path(temp), self._path(key))
        finally:
            if self.fs.exists(self._path(temp)):
                self.fs.rm(self._path(temp))

    def _put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open(target, "wb") as f:
            f.write(data)

    @staticmethod
    def _put_local(local: Path, target: Path) -> None:
        """Copy through a temporary name in the same folder, then rename: readers never see a partial file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, open(local, "rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; deliverables get the usual permissions
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _stored_sha256(self, key: str) -> str:
        if self.root.startswith("s3://"):
            bucket, _, obj = self._path(key).partition("/")
            try:
                head = self.fs.call_s3("head_object", Bucket=bucket, Key=obj, ChecksumMode="ENABLED")
                if head.get("ChecksumSHA256") and "-" not in head["ChecksumSHA256"]:
                    return binascii.hexlify(base64.b64decode(head["ChecksumSHA256"])).decode()
            except (OSError, PermissionError) as exc:
                raise StoreError(f"cannot read back {self.uri(key)}: {exc}") from exc
        import hashlib

        h = hashlib.sha256()
        with self.fs.open(self._path(key), "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()
