"""How each kind of store root writes, verifies and atomically creates objects.

`backend_for` is the one place that looks at a store root's scheme (the `BACKENDS` table); everything else in
`lipline.store` talks to the chosen backend. Every backend guarantees that readers never see a partial key:

* `LocalBackend` (folders, ``file://``): write a temporary file beside the target, then rename it into place;
* `S3Backend` (``s3://``, ``s3a://``): one ``PutObject`` carrying ``ChecksumSHA256`` (the server checks the
  bytes), read back with ``HeadObject``; objects over the single-PUT limit go the `FsspecBackend` way;
* `FsspecBackend` (any other fsspec scheme): upload to a temporary key, verify it, then move it to the key.

Uploads are verified by SHA-256 (`Backend.stored_sha256`); ETags are never used (multipart ETags are not MD5s).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import fsspec

from lipline.errors import StoreError
from lipline.settings import S3_SCHEMES
from lipline.uris import filesystem, is_local, to_path

SINGLE_PUT_LIMIT = 5 * 2**30 - 1  # S3 PutObject limit; below it one request carries the checksum


class Backend:
    """A store root on one kind of filesystem. Keys are relative (``<job_id>/final.mp4``)."""

    local = False
    #: what to check when the root refuses writes (appended to the `StoreError`)
    write_hint = "check its address, credentials and permissions"

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, base = filesystem(root, "store")
        self.base = base.rstrip("/")

    def path(self, key: str) -> str:
        """The key's path for `fs`."""
        return f"{self.base}/{key}"

    def uri(self, key: str) -> str:
        """The key as users see it (in manifests, messages)."""
        return f"{self.root}/{key}"

    #: `write_file` hashes the bytes as it copies them (no `digest` is given it; it returns the SHA-256)
    hashes_while_writing = False

    def write_file(self, local: Path, key: str, digest: str | None, size: int) -> str | None:
        """Place the bytes of `local` (SHA-256 `digest`, `size` bytes) at `key`, never visible half-written."""
        raise NotImplementedError

    def write_bytes(self, data: bytes, key: str) -> None:
        """A small write (the writability probe); no verification."""
        with self.fs.open(self.path(key), "wb") as f:
            f.write(data)

    def create(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` unless it exists: True when this call created it."""
        raise NotImplementedError

    def stored_sha256(self, key: str) -> str:
        """SHA-256 of the stored bytes, read back from the store."""
        h = hashlib.sha256()
        with self.fs.open(self.path(key), "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    def verify(self, key: str, digest: str) -> None:
        stored = self.stored_sha256(key)
        if stored != digest:
            raise StoreError(f"checksum mismatch after upload of {self.uri(key)}: local {digest}, stored {stored}")


class LocalBackend(Backend):
    """A folder: temporary file + rename for writes, a hard link for atomic creation."""

    local = True
    write_hint = "check that the folder can be created and written"

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs = fsspec.filesystem("file")
        self.base = str(to_path(root)).rstrip("/")

    def uri(self, key: str) -> str:
        return self.path(key)

    hashes_while_writing = True  # one read of the file, not two (a 10-min deliverable is ~0.5 GB)

    def write_file(self, local: Path, key: str, digest: str | None, size: int) -> str:
        hashed = hashlib.sha256()
        with open(local, "rb") as src:
            tmp = self._write_temporary(Path(self.path(key)), src, hashed)
        try:
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return hashed.hexdigest()

    def write_bytes(self, data: bytes, key: str) -> None:
        Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
        super().write_bytes(data, key)

    def create(self, key: str, data: bytes) -> bool:
        """Atomic: the fully written temporary file is hard-linked to the key (``link`` fails if the key exists),
        so a reader never sees a partial file and exactly one of several racing writers wins."""
        target = Path(self.path(key))
        tmp = self._write_temporary(target, data)
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return self._create_exclusive(target, data)  # no hard links on this filesystem: O_EXCL instead
        finally:
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _create_exclusive(target: Path, data: bytes) -> bool:
        """``O_CREAT | O_EXCL``: atomic creation, though a reader may see the file before its bytes are in."""
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return True

    @staticmethod
    def _write_temporary(target: Path, content, hashed=None) -> str:
        """A complete copy of `content` (bytes or a binary file) beside `target`, with the usual permissions; a
        binary file's bytes also go to `hashed` (a hashlib object) as they are copied."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(content, bytes):
                    out.write(content)
                else:
                    while block := content.read(1 << 20):
                        out.write(block)
                        if hashed is not None:
                            hashed.update(block)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; deliverables get the usual permissions
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp


class FsspecBackend(Backend):
    """Any other fsspec filesystem: upload to a temporary key, verify it, move it to the key."""

    def write_file(self, local: Path, key: str, digest: str, size: int) -> None:
        """The temporary key is removed whatever happens."""
        temp = f"{key}.part-{uuid.uuid4().hex[:12]}"
        try:
            self.fs.put_file(str(local), self.path(temp))
            self.verify(temp, digest)
            self.fs.mv(self.path(temp), self.path(key))
        finally:
            if self.fs.exists(self.path(temp)):
                self.fs.rm(self.path(temp))

    def create(self, key: str, data: bytes) -> bool:
        """NOT race-free: a generic fsspec filesystem has no exclusive create. The key is checked, the data goes
        to a temporary key, the key is checked again, the data moved there and read back (another writer's bytes
        there mean this call lost). Two writers of the same bytes racing between the last check and the move
        both get True."""
        if self.fs.exists(self.path(key)):
            return False
        temp = f"{key}.part-{uuid.uuid4().hex[:12]}"
        try:
            self.fs.pipe_file(self.path(temp), data)
            if self.fs.exists(self.path(key)):
                return False
            self.fs.mv(self.path(temp), self.path(key))
            return self.fs.cat_file(self.path(key)) == data
        finally:
            if self.fs.exists(self.path(temp)):
                self.fs.rm(self.path(temp))


class S3Backend(FsspecBackend):
    """S3 APIs: single PUT with ``ChecksumSHA256`` read back by ``HeadObject``; conditional PUT for creation."""

    write_hint = ("check its address, credentials and endpoint (LIPLINE_S3_ACCESS_KEY_ID, LIPLINE_S3_SECRET_ACCESS_KEY, "
                  "LIPLINE_S3_ENDPOINT_URL, else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL) "
                  "and permissions")
    CONFLICT_RETRIES = 5  # S3 answers 409 ConditionalRequestConflict while another conditional write is in flight

    def write_file(self, local: Path, key: str, digest: str, size: int) -> None:
        if size > SINGLE_PUT_LIMIT:
            super().write_file(local, key, digest, size)
            return
        self.fs.put_file(str(local), self.path(key), chunksize=SINGLE_PUT_LIMIT, ChecksumSHA256=_b64(digest))

    def create(self, key: str, data: bytes) -> bool:
        """Atomic: ``PutObject`` with ``If-None-Match: *`` (S3 conditional writes); the server refuses it with
        412 PreconditionFailed when the key exists. Verified against SeaweedFS 4.48 (racing writers: one wins)."""
        if len(data) > SINGLE_PUT_LIMIT:
            raise StoreError(f"cannot create {self.uri(key)}: {len(data)} bytes is over the single PUT limit")
        bucket, _, obj = self.path(key).partition("/")
        attempt = 0
        while True:
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=data, IfNoneMatch="*",
                                ChecksumSHA256=_b64(hashlib.sha256(data).hexdigest()))
                return True
            except FileExistsError:  # s3fs's translation when the server names the If-None-Match condition
                return False
            except OSError as exc:
                status = _http_status(exc)
                if status == 412:
                    return False
                if status != 409 or attempt == self.CONFLICT_RETRIES:
                    raise
            finally:
                self.fs.invalidate_cache(self.path(key))
            time.sleep(0.05 * 2**attempt)
            attempt += 1

    def stored_sha256(self, key: str) -> str:
        bucket, _, obj = self.path(key).partition("/")
        head = self.fs.call_s3("head_object", Bucket=bucket, Key=obj, ChecksumMode="ENABLED")
        checksum = head.get("ChecksumSHA256")
        if checksum and "-" not in checksum:  # a composite (multipart) checksum is not the file's SHA-256
            return binascii.hexlify(base64.b64decode(checksum)).decode()
        return super().stored_sha256(key)


def _b64(hex_digest: str) -> str:
    return base64.b64encode(binascii.unhexlify(hex_digest)).decode()


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of the botocore error behind an s3fs exception, if any."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


#: scheme -> backend; schemes not listed use `FsspecBackend`. The only place a store's scheme is looked at.
BACKENDS: dict[str, type[Backend]] = {"file": LocalBackend, **{scheme: S3Backend for scheme in S3_SCHEMES}}


def backend_for(root: str) -> Backend:
    scheme = "file" if is_local(root) else urlparse(root).scheme
    return BACKENDS.get(scheme, FsspecBackend)(root)
