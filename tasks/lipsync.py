"""Lip-sync stage: run a video engine from the registry over every segment.

The engine is looked up by name and built once per worker process (`get_engine` caches it), so a GPU worker
keeps its model loaded across runs. In a deployment this task runs on the `gpu` work pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lipline.errors import InsufficientGPUMemory
from lipline.models.registry import get_engine
from lipline.records import EngineResult, LipsyncOptions, Segment
from lipline.tasks.segment_results import SegmentResults, result_key
from lipline.uris import local_path, publish


def _transient(task, task_run, state) -> bool:
    """Retry storage/network hiccups; never bad input, never an exhausted OOM ladder (route to a bigger pool)."""
    try:
        state.result()
    except InsufficientGPUMemory:
        return False
    except (ConnectionError, TimeoutError):
        return True
    except Exception:  # noqa: BLE001 - everything else is deterministic: retrying would fail the same way
        return False
    return False


def sync_segment(segment: Segment, engine_name: str, out_dir: Path, options: LipsyncOptions | None = None,
                 on_progress: Callable[[float], None] | None = None, *, cache: SegmentResults | None = None,
                 recompute: bool = False) -> EngineResult:
    """Run engine `engine_name` on one segment; returns where its output lies and what the engine did.

    With a `cache` (the store's finished results) and a segment content key, a result finished earlier under the
    same result key is returned as is (``reused``) unless `recompute`; a new output is put into the cache."""
    options = options or LipsyncOptions()
    engine = get_engine(engine_name, kind="video")
    key = None
    if cache is not None and segment.content_key and getattr(engine, "writes_frames", True):
        key = result_key(segment, engine.identity(options), options)
        earlier = None if recompute else cache.load(key, segment.index)
        if earlier is not None:
            return earlier
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    video = local_path(segment.video_uri, out_dir)
    audio = local_path(segment.audio_uri, out_dir)
    track = load_track(local_path(segment.face_track_uri, out_dir)) if segment.face_track_uri else None
    out = out_dir / f"segment-{segment.index:04d}.mp4"
    result = engine.run_segment(segment, video, audio, out, options, track=track, progress=on_progress)
    result = result.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})
    if result.uri == segment.video_uri:  # the engine kept its input frames: nothing written, nothing to cache
        return result
    if key is not None:
        return cache.save(key, result, Path(result.uri))
    return result.model_copy(update={"uri": publish(Path(result.uri), str(out))})


def load_track(path: Path):
    from lipline.models.face.facetrack import FaceTrack

    return FaceTrack.load(path)


@task(name="lipsync-segment", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def lipsync_segment(segment: Segment, engine_name: str, out_dir: Path, options: LipsyncOptions | None = None,
                    cache: SegmentResults | None = None, recompute: bool = False) -> EngineResult:
    return sync_segment(segment, engine_name, out_dir, options, cache=cache, recompute=recompute)


def lipsync_segments(segments: list[Segment], engine_name: str, out_dir: Path, options: LipsyncOptions | None = None,
                     on_progress: Callable[[float], None] | None = None, *, cache: SegmentResults | None = None,
                     recompute: bool = False) -> list[EngineResult]:
    """Segments in order, one task run each (so a failed segment is retried alone and shown in the UI)."""
    get_engine(engine_name, kind="video")  # fail fast on an unknown or wrong-kind engine
    results = []
    total_frames = sum(s.frame_count for s in segments) or 1
    done = 0
    for seg in segments:
        results.append(lipsync_segment(seg, engine_name, out_dir, options, cache, recompute))
        done += seg.frame_count
        if on_progress:
            on_progress(done / total_frames)
    return results
