"""Engine registry: one name -> one lazily imported engine class, instantiated once per worker process.

Two kinds of engines exist:

* ``video`` engines turn a segment (its video or frame range + its 16 kHz model audio) into the segment's frames
  (``run_segment(segment, video, audio, out, options, track=...)`` -> `EngineResult`); the `localize` flow
  drives these. An engine that keeps its input frames returns its input (no file written).
* ``face`` engines work on aligned face crops, masks and audio features as tensors/arrays
  (``generate``); the `latentsync` video engine wraps `latentsync-faces`.

Importing this module imports neither torch nor any engine: the CLI and the CPU pool stay light.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Literal

from lipline.errors import EngineError

EngineKind = Literal["video", "face"]


@dataclass(frozen=True)
class EngineSpec:
    name: str
    kind: EngineKind
    target: str  # "module:Class"
    summary: str
    uses_faces: bool = False  # True: the engine needs the job's face track (and model weights)


_SPECS: dict[str, EngineSpec] = {}
_INSTANCES: dict[tuple[str, tuple], Any] = {}
_LOCK = threading.Lock()
_LOADS: dict[str, int] = {}  # engine name -> instances built in this process (a warm worker builds one)


def register_engine(spec: EngineSpec) -> None:
    """Add (or replace) an engine under ``spec.name``."""
    _SPECS[spec.name] = spec


def engine_specs(kind: EngineKind | None = None) -> list[EngineSpec]:
    """Registered engines, optionally only one kind, sorted by name."""
    return sorted((s for s in _SPECS.values() if kind is None or s.kind == kind), key=lambda s: s.name)


def get_spec(name: str, kind: EngineKind | None = None) -> EngineSpec:
    spec = _SPECS.get(name)
    if spec is None:
        known = ", ".join(s.name for s in engine_specs(kind)) or "none"
        raise EngineError(f"unknown engine {name!r}; known engines: {known}")
    if kind is not None and spec.kind != kind:
        usable = ", ".join(s.name for s in engine_specs(kind))
        raise EngineError(f"engine {name!r} is a {spec.kind} engine and cannot be used here (needs a {kind} engine: {usable})")
    return spec


def get_engine(name: str, kind: EngineKind | None = None, **options: Any) -> Any:
    """Return the process-wide instance of engine ``name`` built with ``options`` (loaded once, then reused)."""
    spec = get_spec(name, kind)
    key = (name, tuple(sorted(options.items())))
    with _LOCK:
        if key not in _INSTANCES:
            module_name, _, class_name = spec.target.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            _INSTANCES[key] = cls(**options)
            _LOADS[name] = _LOADS.get(name, 0) + 1
        return _INSTANCES[key]


def engine_loads(name: str) -> int:
    """How many times this process built engine ``name`` (the model load count a warm worker reports)."""
    return _LOADS.get(name, 0)


register_engine(EngineSpec("passthrough", "video", "lipline.models.passthrough:PassthroughEngine",
                           "dry run for pipeline QA: original frames under the new audio (no lip-sync)"))
register_engine(EngineSpec("latentsync", "video", "lipline.models.latentsync.video_engine:LatentSyncVideoEngine",
                           "LatentSync 1.5 (256 px) / 1.6 (512 px): face track, alignment, diffusion, paste-back",
                           uses_faces=True))
register_engine(EngineSpec("latentsync-faces", "face", "lipline.models.latentsync.engine:LatentSyncEngine",
                           "LatentSync on aligned face crops (tensors in, tensors out); used by `latentsync`"))
register_engine(EngineSpec("bench-fixed-cost", "video", "lipline.models.fixed_cost:FixedCostEngine",
                           "BENCH/TEST ONLY, no lip-sync: copies the frames and takes a fixed time per frame "
                           "(LIPLINE_BENCH_SECONDS_PER_FRAME) to measure orchestration"))
