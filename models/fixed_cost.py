"""The `bench-fixed-cost` engine: FOR BENCHMARKS AND TESTS OF THE ORCHESTRATION ONLY — it does not lip-sync.

It writes the segment's own frames (lossless, like a model engine's output, so merge, the result cache and the
GPU hand-off see real files) and then waits until ``seconds_per_frame`` × frames have passed, so a segment costs
a known, fixed time whatever the machine: orchestration overhead = measured time − that cost. Every result says
``dry_run`` (the manifest and the CLI label the deliverable as not lip-synced).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lipline.errors import InsufficientGPUMemory
from lipline.frames import FrameReader, LosslessWriter, video_facts
from lipline.records import EngineResult, FrameSpan, LipsyncOptions, Segment

DEFAULT_SECONDS_PER_FRAME = 0.02


class FixedCostEngine:
    name = "bench-fixed-cost"
    kind = "video"
    version = "1"
    dry_run = True

    def __init__(self) -> None:
        from lipline.settings import get_settings

        self.seconds_per_frame = get_settings().bench_seconds_per_frame
        self.oom_above_frames = get_settings().bench_oom_above_frames  # plays a small GPU (tests of the OOM route)
        self.pid = os.getpid()

    def identity(self, options: LipsyncOptions) -> dict:
        return {"engine": self.name, "version": self.version, "seconds_per_frame": self.seconds_per_frame}

    def run_segment(self, segment: Segment, video: Path, audio: Path, out: Path, options: LipsyncOptions, *,
                    track: Any = None, progress: Any = None) -> EngineResult:
        started = time.perf_counter()
        if self.oom_above_frames is not None and segment.frame_count > self.oom_above_frames:
            raise InsufficientGPUMemory(f"bench-fixed-cost plays a small GPU: {segment.frame_count} frames > "
                                        f"LIPLINE_BENCH_OOM_ABOVE_FRAMES={self.oom_above_frames}",
                                        ["bench: simulated out of memory"])
        first, n = (segment.frame_range[0], segment.frame_count) if segment.frame_range else (0, segment.frame_count)
        _, rate, width, height = video_facts(video, count_frames=False)
        reader = FrameReader(video, rate, first + n)
        writer = LosslessWriter(out, rate, width, height)
        try:
            for frame in reader.frames(first, first + n):
                writer.write(frame)
        finally:
            writer.close()
            reader.close()
        remaining = self.seconds_per_frame * n - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)
        return EngineResult(segment_index=segment.index, uri=str(out), engine=self.name, engine_version=self.version,
                            dry_run=True, seconds=round(time.perf_counter() - started, 3), frames=n,
                            passed_through=[FrameSpan(start=0, end=n, reason="dry run")],
                            settings={"seconds_per_frame": self.seconds_per_frame, "pid": self.pid})
