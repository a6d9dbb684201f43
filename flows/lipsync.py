"""The `lipsync-segments` flow: the GPU side of a job, deployed on the `gpu` work pool.

`localize` hands it segment URIs in the shared store and gets back, through the store (results cross workers
only when persisted), one engine output per segment. A GPU worker keeps its engine loaded between runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from prefect import flow

from lipline.records import EngineResult, LipsyncOptions, Segment
from lipline.store import Store
from lipline.tasks.lipsync import lipsync_segments
from lipline.tasks.segment_results import SegmentResults
from lipline.uris import publish

RESULTS_NAME = "results.json"


@flow(name="lipsync-segments", description="Run a lip-sync engine over segments; outputs and results.json in the store")
def lipsync_segments_flow(segments: list[Segment], engine: str, out_prefix: str,
                          options: LipsyncOptions | None = None, store_root: str | None = None,
                          recompute: bool = False) -> str:
    """Write each segment's engine output under `out_prefix` and `out_prefix/results.json`; return that URI.
    An output that is the segment's own input (an engine that keeps frames) is already in the store; with
    `store_root`, finished results are reused from (and new ones put into) that store's result cache."""
    workdir = Path(tempfile.mkdtemp(prefix="lipline-gpu-"))
    try:
        cache = SegmentResults(Store.from_settings(store_root)) if store_root else None
        results = lipsync_segments(segments, engine, workdir, options, cache=cache, recompute=recompute)
        inputs = {s.video_uri for s in segments}
        stored = [r if r.uri in inputs or r.cache_key else
                  r.model_copy(update={"uri": publish(Path(r.uri), f"{out_prefix}/{Path(r.uri).name}")})
                  for r in results]
        doc = workdir / RESULTS_NAME
        doc.write_text(json.dumps([r.model_dump(mode="json") for r in stored]))
        return publish(doc, f"{out_prefix}/{RESULTS_NAME}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def read_results(results_uri: str, workdir: Path) -> list[EngineResult]:
    from lipline.uris import local_path

    return [EngineResult(**r) for r in json.loads(local_path(results_uri, workdir).read_text())]
