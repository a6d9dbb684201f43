"""Uploads into the store: allowed roles and types, content sniffing, size limits, keys made by the server.

A client's file name is only shown back to it; the object key is ``_portal/uploads/<draft>/<role><ext>``, with a
draft id the server generated and an extension from a fixed list. Bytes stream to a temporary file in chunks
(never the whole file in memory), are sniffed from their first bytes, then go to the store with its SHA-256
verification (`Store.put_file`).
"""

from __future__ import annotations

import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from lipline.errors import LiplineError
from lipline.store import Store

ROLES = ("video", "audio", "subtitles", "intro", "outro")
PREFIX = "_portal/uploads"
DRAFT_ID = re.compile(r"^d-[0-9a-f]{16}$")
SUBTITLE_MAX_BYTES = 5 * 1024 * 1024
SNIFF_BYTES = 4096

VIDEO_EXT = {".mp4": "mp4", ".mov": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".webm": "matroska", ".avi": "avi"}
AUDIO_EXT = {".wav": "wav", ".mp3": "mp3", ".m4a": "mp4", ".aac": "aac", ".flac": "flac", ".ogg": "ogg",
             ".opus": "ogg"}
SUBTITLE_EXT = {".srt": "srt", ".ass": "ass", ".ssa": "ass", ".vtt": "vtt"}
ALLOWED: dict[str, dict[str, str]] = {"video": VIDEO_EXT, "intro": VIDEO_EXT, "outro": VIDEO_EXT,
                                      "audio": AUDIO_EXT, "subtitles": SUBTITLE_EXT}
KIND_NAMES = {"mp4": "an MP4/MOV container", "matroska": "a Matroska/WebM container", "avi": "an AVI container",
              "wav": "a WAV file", "mp3": "an MP3 file", "aac": "an ADTS AAC file", "flac": "a FLAC file",
              "ogg": "an Ogg file", "srt": "SRT subtitles", "ass": "ASS/SSA subtitles", "vtt": "WebVTT subtitles"}


class UploadRefused(LiplineError):
    """An upload the portal refuses (wrong role, type, size or content); `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def new_draft_id() -> str:
    return f"d-{secrets.token_hex(8)}"


def check_draft_id(draft: str) -> str:
    if not DRAFT_ID.match(draft):
        raise UploadRefused(f"unknown upload set {draft!r}", status=404)
    return draft


def display_name(name: str) -> str:
    """The client's file name reduced to its last part, for messages only (never part of a key)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return re.sub(r"[\x00-\x1f\x7f]", "?", base)[:200] or "upload"


def extension_for(role: str, name: str) -> str:
    """The allowed extension of `name` for `role`, or `UploadRefused` listing what is allowed."""
    if role not in ALLOWED:
        raise UploadRefused(f"unknown role {role!r}: choose one of {', '.join(ROLES)}", status=404)
    ext = PurePosixPath(display_name(name)).suffix.lower()
    if ext not in ALLOWED[role]:
        raise UploadRefused(f"{display_name(name)}: a {role} must be one of {', '.join(sorted(ALLOWED[role]))} "
                            f"(got {ext or 'no extension'!r}); export it in one of these formats")
    return ext


def max_bytes(role: str, max_mb: float) -> int:
    return SUBTITLE_MAX_BYTES if role == "subtitles" else int(max_mb * 1024 * 1024)


def sniff(head: bytes) -> str:
    """What the first bytes of a file are: a container/codec kind, ``text``, ``empty`` or ``unknown``."""
    if not head:
        return "empty"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"RIFF", b"RF64")) and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "aac"
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")) or b"\x00" not in head:
        return "text"
    return "unknown"


def _subtitle_kind(head: bytes) -> str | None:
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            text = head[len(bom):].decode(codec, errors="ignore")
            break
    else:
        text = head.decode("latin-1")
    stripped = text.lstrip()
    if stripped.startswith("WEBVTT"):
        return "vtt"
    if "[Script Info]" in text:
        return "ass"
    return "srt" if "-->" in text else None


def check_content(role: str, name: str, ext: str, head: bytes) -> None:
    """Refuse content that does not match the extension (a .mp4 that is really text, a .srt that is binary)."""
    expected = ALLOWED[role][ext]
    kind = sniff(head)
    shown = display_name(name)
    if kind == "empty":
        raise UploadRefused(f"{shown}: the file is empty; upload the {role} file itself")
    if role == "subtitles":
        found = _subtitle_kind(head) if kind == "text" else None
        if found is None:
            raise UploadRefused(f"{shown}: this is not SRT, ASS or VTT text (its first bytes are "
                                f"{'binary data' if kind != 'text' else 'text without subtitle cues'}); "
                                "export the subtitles as .srt, .ass or .vtt")
        return
    if kind != expected:
        what = "text" if kind == "text" else (KIND_NAMES.get(kind, "not a media container"))
        raise UploadRefused(f"{shown}: the name says {KIND_NAMES[expected]} ({ext}) but the content is {what}; "
                            f"upload the real {role} file or rename it to match its format", status=415)


@dataclass
class Uploaded:
    role: str
    key: str
    name: str
    size: int
    sha256: str | None  # None for a presigned multipart upload (the server never reads it whole): see `etag`
    uri: str
    etag: str | None = None


def upload_key(draft: str, role: str, ext: str) -> str:
    """The one object key of a draft's file for `role` (made here, never from the client)."""
    return f"{PREFIX}/{check_draft_id(draft)}/{role}{ext}"


def record_upload(store: Store, draft: str, role: str, name: str, key: str, size: int, user: str, *,
                  sha256: str | None = None, etag: str | None = None) -> Uploaded:
    """Record a stored upload's metadata (``<role>.json``) and remove the role's file of another type."""
    ext = key[key.rindex("."):]
    for other in set(ALLOWED[role]) - {ext}:  # one file per role: replace one of another type
        store.delete(f"{PREFIX}/{draft}/{role}{other}")
    meta = {"role": role, "key": key, "name": display_name(name), "size": size, "sha256": sha256, "etag": etag,
            "uri": store.uri(key), "user": user, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.put_json(meta, f"{PREFIX}/{draft}/{role}.json")
    return Uploaded(role=role, key=key, name=meta["name"], size=size, sha256=sha256, uri=meta["uri"], etag=etag)


def fingerprint(meta: dict) -> str:
    """What identifies an upload's content for a check: its SHA-256, or the S3 ETag of a multipart upload."""
    return meta.get("sha256") or f"etag:{meta.get('etag')}"


class UploadSink:
    """Receives one upload's chunks: size limit and sniffing as bytes arrive, a temporary file on disk."""

    def __init__(self, role: str, name: str, limit: int, work_dir: Path | None) -> None:
        self.role, self.name, self.limit = role, name, limit
        self.ext = extension_for(role, name)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="lipline-portal-", dir=work_dir)
        self.path = Path(self._tmpdir.name) / f"upload{self.ext}"
        self._file = open(self.path, "wb")
        self.size = 0
        self._head = b""
        self._sniffed = False

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise UploadRefused(f"{display_name(self.name)}: larger than the {self.role} limit of "
                                f"{self.limit / 1024 / 1024:.0f} MB; shorten or re-encode it "
                                "(the limit is LIPLINE_PORTAL_MAX_UPLOAD_MB)", status=413)
        if not self._sniffed:
            self._head += chunk[:SNIFF_BYTES]
            if len(self._head) >= SNIFF_BYTES:
                self._sniff()
        self._file.write(chunk)

    def _sniff(self) -> None:
        self._sniffed = True
        check_content(self.role, self.name, self.ext, self._head[:SNIFF_BYTES])

    def finish(self, store: Store, draft: str, user: str) -> Uploaded:
        """Close, sniff a short file, put it into the store (verified) and record its metadata."""
        self._file.close()
        if not self._sniffed:
            self._sniff()
        key = upload_key(draft, self.role, self.ext)
        stored = store.put_file(self.path, key)
        return record_upload(store, draft, self.role, self.name, key, stored.size, user, sha256=stored.sha256)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmpdir.cleanup()


def draft_files(store: Store, draft: str) -> dict[str, dict]:
    """role -> upload metadata of the files in a draft (what `UploadSink.finish` recorded)."""
    files: dict[str, dict] = {}
    for role in ROLES:
        key = f"{PREFIX}/{check_draft_id(draft)}/{role}.json"
        if store.exists(key):
            meta = store.read_json(key)
            if store.exists(meta["key"]):
                files[role] = meta
    return files


def save_check(store: Store, draft: str, reports: list[dict], files: dict[str, dict]) -> None:
    """Remember a check's reports with the SHA-256 of each file checked (a later upload makes it stale)."""
    store.put_json({"files": {r: fingerprint(m) for r, m in files.items()}, "reports": reports},
                   f"{PREFIX}/{draft}/check.json")


def load_check(store: Store, draft: str, files: dict[str, dict]) -> list[dict] | None:
    """The last check's reports if it covered exactly the current files, else None."""
    key = f"{PREFIX}/{check_draft_id(draft)}/check.json"
    if not store.exists(key):
        return None
    check = store.read_json(key)
    if check.get("files") != {r: fingerprint(m) for r, m in files.items()}:
        return None
    return check["reports"]
