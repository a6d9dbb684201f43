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


def local_path(uri: str, workdir: Path) -> Path:
    """A readable local file for `uri`: the file itself when local, else a download into `workdir`."""
    if is_local(uri):
        return to_path(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    dest = workdir / "inputs" / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(path).name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        fs.get_file(path, str(tmp))
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
    fs, target = fsspec.core.url_to_fs(uri)
    fs.put_file(str(path), target)
    return uri


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
