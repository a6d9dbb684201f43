"""URI helpers for tasks: every stage takes and returns URIs (a local path, file://, s3://, ...).

A task reads its inputs through `local_path` (a no-op for local files, a download into the task's work dir
otherwise) and hands its outputs on with `publish` (a no-op when the destination is the same local file).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlparse

import fsspec

from lipline.settings import S3_SCHEMES, get_settings


def is_local(uri: str) -> bool:
    scheme = urlparse(str(uri)).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def to_path(uri: str) -> Path:
    """Local path of a local URI. ``file://`` URIs are percent-decoded to raw bytes (any file name can be spelt)."""
    text = str(uri)
    if text.startswith("file://"):
        return Path(os.fsdecode(unquote_to_bytes(text[7:]))).absolute()
    return Path(text).absolute()


def path_to_uri(path: str | os.PathLike) -> str:
    """A JSON-safe reference to a local file: the path itself, or a percent-encoded ``file://`` URI when the name
    is not valid UTF-8 (such a name cannot travel in Prefect parameters or JSON as text)."""
    text = os.fspath(Path(path).absolute())
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "file://" + quote_from_bytes(os.fsencode(text), safe="/")


def filesystem(uri: str, what: str = "input", **options):
    """``(fsspec filesystem, path)`` for a URI; an unknown or uninstalled scheme is an `UnknownScheme` error.

    Every S3 access (the store, input downloads, `publish`) gets its endpoint and credentials here, from
    `Settings.s3_options` (``LIPLINE_S3_*``, then the AWS variables); `options` given by the caller win."""
    if urlparse(str(uri)).scheme in S3_SCHEMES:
        options = {**get_settings().s3_options(), **options}
    try:
        return fsspec.core.url_to_fs(uri, **options)
    except (ImportError, ValueError) as exc:
        from lipline.errors import UnknownScheme

        raise UnknownScheme(uri, what, exc) from exc


def local_path(uri: str, workdir: Path) -> Path:
    """A readable local file for `uri`: the file itself when local, else a download into `workdir`."""
    if is_local(uri):
        return to_path(uri)
    fs, path = filesystem(uri)
    dest = workdir / "inputs" / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(path).name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            fs.get_file(path, str(tmp))
        except Exception as exc:  # noqa: BLE001 - any backend error: the input cannot be fetched, named as such
            from lipline.errors import InputError, one_line

            tmp.unlink(missing_ok=True)
            raise InputError(uri, "input.readable", f"cannot be fetched ({one_line(exc)})",
                             "Check the URI, that the object exists and the credentials/endpoint for its store.") from exc
        tmp.rename(dest)
    return dest


def publish(path: Path, uri: str) -> str:
    """Make the local file `path` available at `uri` and return `uri`."""
    if is_local(uri):
        dest = to_path(uri)
        if dest != path.absolute():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        return str(dest)
    fs, target = filesystem(uri, "output")
    fs.put_file(str(path), target)
    return uri


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# (absolute path, size, mtime_ns) -> SHA-256: what this process (or the validation worker it took reports from)
# already read. A file that changes size or modification time is a new key, so it is read again.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_identity(path: Path) -> tuple[str, int, int]:
    """(absolute path, size, mtime_ns): what a result computed from a file's bytes may be remembered under."""
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def sha256_once(path: Path) -> str:
    """`sha256_file`, read once per process while the file keeps its size and modification time (a 10-min source
    is ~1 GB: the probe cache, the faces cache, the segment keys and the manifest all ask for it)."""
    key = file_identity(path)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = sha256_file(path)
        while len(_DIGESTS) > 256:  # long-lived processes (workers) keep the most recent
            _DIGESTS.pop(next(iter(_DIGESTS)))
    return digest


def known_digests() -> dict[tuple[str, int, int], str]:
    """The digests `sha256_once` has read in this process (handed from the validation worker to the job)."""
    return dict(_DIGESTS)


def remember_digests(digests: dict[tuple[str, int, int], str]) -> None:
    """Take digests another process read; each still applies only while its file keeps that size and mtime."""
    _DIGESTS.update(digests)
