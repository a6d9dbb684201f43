"""Engine results keyed by content, kept in the store, so a re-run recomputes only what is missing.

A segment's **content key** (``Segment.content_key``, set by the `localize` flow) is the SHA-256 of everything
its frames and audio depend on: the input video's SHA-256, the normalized picture (frames, rate, size), the
source frame shown at each output frame (ping-pong/loop/freeze included), the SHA-256 of the segment's 16 kHz
model audio and the face-track key (detector, version, face choice).

Its **result key** adds what the engine does with it: the engine's identity (name, version and, for model
engines, the SHA-256 of every checkpoint and the mask) and every lip-sync option (steps, guidance, seed,
precision, ...). Under ``STORE/_cache/segments/<result key>/`` lie the engine's output (``segment.mp4``) and
``result.json``, written last: a key with ``result.json`` is complete. To force a recompute, delete that prefix
(or all of ``_cache/segments/``), or run the job with ``recompute=True`` (``lipline run --recompute``).

Engines that return their input (``passthrough``) write nothing to cache: their "output" is the job's own input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from lipline.errors import StoreError
from lipline.records import EngineResult, LipsyncOptions, Segment
from lipline.store import Store
from lipline.uris import sha256_file

CACHE_PREFIX = "_cache/segments"
RESULT_NAME = "result.json"
OUTPUT_NAME = "segment.mp4"


def _digest(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def segment_content_key(*, video_sha256: str, picture: dict, source_frames: Sequence[int], audio_path: Path,
                        faces_key: str | None) -> str:
    """SHA-256 of what one segment's input depends on (see the module docstring)."""
    frames = hashlib.sha256(json.dumps(list(source_frames)).encode()).hexdigest()
    return _digest({"video": video_sha256, "picture": picture, "frames": frames, "audio": sha256_file(audio_path),
                    "faces": faces_key})


def result_key(segment: Segment, identity: dict, options: LipsyncOptions) -> str:
    """SHA-256 of a segment's content key, the engine identity and the lip-sync options."""
    if not segment.content_key:
        raise ValueError(f"segment {segment.index} has no content key")
    return _digest({"segment": segment.content_key, "engine": identity, "options": options.model_dump(mode="json")})


class SegmentResults:
    """The store's cache of finished engine results (``_cache/segments/<result key>/``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def prefix(self, key: str) -> str:
        return f"{CACHE_PREFIX}/{key}"

    def load(self, key: str, segment_index: int) -> EngineResult | None:
        """The finished result under ``key`` (its output verified present), renumbered for this job's segment;
        None when absent or incomplete."""
        try:
            if not self.store.exists(f"{self.prefix(key)}/{RESULT_NAME}"):
                return None
            doc = self.store.read_json(f"{self.prefix(key)}/{RESULT_NAME}")
            if not self.store.exists(f"{self.prefix(key)}/{OUTPUT_NAME}"):
                return None
        except (StoreError, OSError, ValueError):
            return None  # unreadable entry: recompute (it is overwritten by the new result)
        result = EngineResult(**doc)
        return result.model_copy(update={"segment_index": segment_index, "reused": True,
                                         "uri": self.store.uri(f"{self.prefix(key)}/{OUTPUT_NAME}")})

    def save(self, key: str, result: EngineResult, output: Path) -> EngineResult:
        """Upload the engine's output, then ``result.json`` (the completion marker of the key)."""
        stored = self.store.put_file(output, f"{self.prefix(key)}/{OUTPUT_NAME}")
        result = result.model_copy(update={"uri": stored.uri, "cache_key": key})
        self.store.put_json(result.model_dump(mode="json"), f"{self.prefix(key)}/{RESULT_NAME}")
        return result

    def forget(self, key: str) -> None:
        self.store.delete_prefix(self.prefix(key))
