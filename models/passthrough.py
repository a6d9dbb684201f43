"""The `passthrough` engine: the segment's original frames under the new audio. A dry run for pipeline QA —
it does not lip-sync, and every output that used it says so (CLI, manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lipline.records import EngineResult, FrameSpan, LipsyncOptions, Segment


class PassthroughEngine:
    name = "passthrough"
    kind = "video"
    version = "2"
    dry_run = True
    writes_frames = False  # its output is its input: nothing to cache

    def identity(self, options: LipsyncOptions) -> dict:
        """What this engine's output depends on besides its input (part of the segment result key)."""
        return {"engine": self.name, "version": self.version}

    def run_segment(self, segment: Segment, video: Path, audio: Path, out: Path, options: LipsyncOptions, *,
                    track: Any = None, progress: Any = None) -> EngineResult:
        """The segment's own frames: its input is its output (the final encode takes the delivery audio)."""
        n = segment.frame_count
        return EngineResult(segment_index=segment.index, uri=segment.video_uri, frame_range=segment.frame_range,
                            engine=self.name, engine_version=self.version, dry_run=True, seconds=0.0, frames=n,
                            passed_through=[FrameSpan(start=0, end=n, reason="dry run")])
