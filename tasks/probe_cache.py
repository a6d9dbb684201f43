"""Probe results remembered by content: a file decoded once is not decoded again.

`probe_media` decodes every stream to the end (the data contract's "decodes to the end"): ~7 CPU s for a minute of
1080p H.264 here, 60-120 s for ten minutes. Its result depends only on the file's bytes, the probe's code and the
FFmpeg libraries that decode, so it is kept as one small JSON file per input under the probe cache
(``LIPLINE_CACHE_DIR``/probe; default ``$XDG_CACHE_HOME/lipline`` or ``~/.cache/lipline``), named by the SHA-256 of
the bytes and keyed as well by the source of `tasks/probe.py` and `lipline/records.py` and by PyAV's and
libavcodec's versions: a change of any of them is a miss, never a stale answer. One reference video dubbed into N
languages (a nightly batch) and the same intro/outro on every job are decoded by the first job; the others read the
same probe (the same verdict, the same figures) after hashing the file (~1 GB/s).

The cache only ever saves time: a missing, unreadable or stale entry is a miss and the file is probed (and the entry
written again, whole or not at all); a cache folder that cannot be written is skipped. ``LIPLINE_CACHE_DIR=off``
turns it off. An input the probe refuses (empty, not media) raises as before and is not remembered.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from lipline.records import MediaProbe
from lipline.settings import get_settings
from lipline.uris import local_path, sha256_once

log = logging.getLogger("lipline.probe_cache")
OFF = "off"


def cache_root() -> Path | None:
    """The probe cache folder, or None when ``LIPLINE_CACHE_DIR=off``."""
    configured = get_settings().cache_dir
    if configured is not None and str(configured).strip().lower() == OFF:
        return None
    if configured:
        return Path(configured).expanduser() / "probe"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lipline" / "probe"


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """What besides the bytes decides a probe: the probe's and the records' source, PyAV's and libavcodec's versions."""
    import av

    from lipline import records
    from lipline.tasks import probe

    digest = hashlib.sha256()
    for module in (probe, records):
        digest.update(Path(module.__file__).read_bytes())
    codec = ".".join(str(n) for n in av.library_versions.get("libavcodec", ()))
    digest.update(f"av {av.__version__} libavcodec {codec}".encode())
    return digest.hexdigest()[:16]


def entry_path(root: Path, content_sha256: str) -> Path:
    return root / content_sha256[:2] / f"{content_sha256}-{code_key()}.json"


def _read(entry: Path, uri: str) -> MediaProbe | None:
    try:
        probe = MediaProbe.model_validate_json(entry.read_bytes())
    except (OSError, ValueError):  # absent, unreadable, or written by another shape of the record
        return None
    return probe.model_copy(update={"uri": uri})


def _write(entry: Path, probe: MediaProbe) -> None:
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=entry.name, suffix=".part", dir=entry.parent)
        with os.fdopen(fd, "w") as out:
            out.write(probe.model_dump_json())
        os.replace(tmp, entry)  # whole or not at all
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        log.info("probe cache %s not written (%s): the next job probes this file again", entry.parent, exc)


def probe_media_cached(uri: str, workdir: Path) -> MediaProbe:
    """`probe_media(uri, workdir)`, read from the probe cache when the same bytes were probed before."""
    from lipline.tasks.probe import probe_media

    root = cache_root()
    if root is None:
        return probe_media(uri, workdir)
    try:
        path = local_path(uri, workdir)
        content = sha256_once(path) if path.is_file() and path.stat().st_size else None
    except OSError:  # FileNotFoundError included
        content = None
    if content is None:  # missing, empty or unreadable: `probe_media` says which, as it always has
        return probe_media(uri, workdir)
    entry = entry_path(root, content)
    cached = _read(entry, uri)
    if cached is not None:
        log.info("%s: probe read from the cache (the same bytes were decoded before): %s", uri, entry)
        return cached
    probe = probe_media(uri, workdir)
    _write(entry, probe)
    return probe


__all__ = ["cache_root", "code_key", "entry_path", "probe_media_cached"]
