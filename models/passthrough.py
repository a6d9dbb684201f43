"""The `passthrough` engine: the segment's original frames under the new audio. A dry run for pipeline QA —
it does not lip-sync, and every output that used it says so (CLI, manifest)."""

from __future__ import annotations

from pathlib import Path

from lipline.media import run_ffmpeg


class PassthroughEngine:
    name = "passthrough"
    version = "1"
    dry_run = True

    def run_segment(self, video: Path, audio: Path, out: Path) -> list[str]:
        """Mux `video`'s frames (stream copy, untouched) with `audio`; returns the OOM-ladder rungs taken (none)."""
        run_ffmpeg(["-i", video, "-i", audio, "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                    "-c:a", "aac", "-b:a", "128k", "-shortest", out], what=f"passing {video.name} through")
        return []
