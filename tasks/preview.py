"""A preview's inputs and its watch on the lip-sync stage (used by `flows/preview.py`).

A preview is a `localize` job made small enough for an operator's laptop GPU:

* **≤ 512 px on the short side** (after display rotation; 1920x1080 → 910x512, 1080x1920 → 512x910; smaller
  inputs are not upscaled). The short side, not the long one, because the video contract asks for a short side
  ≥ 360 px (`video.short_side`): a preview of a valid input still passes it, and one of a too-small input is
  refused as the full job would be.
* **≤ 30 s**: the first 30 s of the video and of the dub (a longer job is previewed, not refused). Intro and outro
  bumpers are left out, so the deliverable is the main clip only.

`SlowdownWatch` measures the lip-sync stage as it progresses (wall seconds per second of video) and raises
`PreviewTooSlow` as soon as that exceeds the limit while segments remain.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task

from lipline.errors import EngineError
from lipline.media import run_ffmpeg
from lipline.params import LocalizeParams
from lipline.progress import JobProgress
from lipline.tasks.probe import probe_media
from lipline.uris import local_path

PREVIEW_MAX_SHORT_SIDE = 512
PREVIEW_MAX_SECONDS = 30.0


class PreviewTooSlow(EngineError):
    """The preview's lip-sync runs slower than the allowed factor of real time on this machine."""

    def __init__(self, figures: "Slowdown") -> None:
        self.figures = figures
        super().__init__(f"lip-sync ran {figures.slowdown:.2f} s per second of video after {figures.video_s_done:.2f} "
                         f"of {figures.video_s_total:.2f} s (limit {figures.limit:g}, LIPLINE_PREVIEW_MAX_SLOWDOWN)")


@dataclass(frozen=True)
class Slowdown:
    """One measurement of the lip-sync stage: wall seconds spent, video seconds done, and their ratio."""

    wall_s: float
    video_s_done: float
    video_s_total: float
    limit: float

    @property
    def slowdown(self) -> float:
        return self.wall_s / self.video_s_done if self.video_s_done > 0 else float("inf")

    def too_slow(self) -> bool:
        """Over the limit while lip-sync work remains (once every segment is done, finishing here is cheaper than
        starting again elsewhere)."""
        return self.video_s_done < self.video_s_total and self.slowdown > self.limit

    def as_dict(self) -> dict:
        return {**asdict(self), "slowdown": round(self.slowdown, 3)}


class SlowdownWatch(JobProgress):
    """The job's progress reporter, also timing the lip-sync stage: it starts when the segment stage reports done
    and is judged at every lip-sync report (one per finished segment). `clock` is injectable for tests."""

    def __init__(self, job_id: str, video_s_total: float, limit: float, clock=time.monotonic) -> None:
        super().__init__(job_id)
        self.video_s_total, self.limit, self.clock = video_s_total, limit, clock
        self.started: float | None = None
        self.last: Slowdown | None = None

    def update(self, stage: str, fraction: float = 1.0) -> None:
        super().update(stage, fraction)
        if stage == "segment" and fraction >= 1.0:
            self.started = self.clock()
        elif stage == "lipsync" and self.started is not None:
            self.last = Slowdown(wall_s=round(self.clock() - self.started, 3),
                                 video_s_done=round(fraction * self.video_s_total, 3),
                                 video_s_total=self.video_s_total, limit=self.limit)
            if self.last.too_slow():
                raise PreviewTooSlow(self.last)


def scale_filter(max_short: int = PREVIEW_MAX_SHORT_SIDE) -> str:
    """ffmpeg scale filter: short side ≤ `max_short` (after ffmpeg's autorotation), even dimensions, aspect kept,
    never upscaled (1920x1080 → 910x512)."""
    short = f"trunc(min({max_short},%s)/2)*2"
    return (f"scale=w='if(lte(iw,ih),{short % 'iw'},-2)':h='if(lte(iw,ih),-2,{short % 'ih'})'")


@dataclass(frozen=True)
class PreviewInputs:
    """The preview's own video and dub (local files in the job's work dir) and what was done to make them."""

    video: Path
    audio: Path
    width: int
    height: int
    video_s: float
    audio_s: float
    source_video_s: float
    source_audio_s: float

    def lipsync_seconds(self, params: LocalizeParams) -> float:
        """Seconds of video the lip-sync stage will produce: the dub's length, or the video's when it is longer
        and padded with silence (the length policy of `tasks/segment.py`)."""
        if params.video_longer == "pad-silence":
            return max(self.audio_s, self.video_s)
        return self.audio_s

    def notice(self, params: LocalizeParams) -> str:
        cut = [f"{name} {src:.1f} s" for name, src, kept in (("video", self.source_video_s, self.video_s),
                                                              ("dub", self.source_audio_s, self.audio_s))
               if src > kept + 0.05]
        dropped = [name for name, uri in (("intro", params.intro_uri), ("outro", params.outro_uri)) if uri]
        return (f"preview: {self.width}x{self.height}, first {PREVIEW_MAX_SECONDS:g} s at most"
                + (f" (cut from {', '.join(cut)})" if cut else "")
                + (f"; {' and '.join(dropped)} left out" if dropped else "")
                + f"; of {params.video_uri} and {params.audio_uri}")


@task(name="preview-inputs", retries=0)
def prepare_preview(params: LocalizeParams, workdir: Path) -> PreviewInputs:
    """The first `PREVIEW_MAX_SECONDS` of the video (scaled to the preview size, H.264) and of the dub (PCM WAV)."""
    workdir.mkdir(parents=True, exist_ok=True)
    video_src = local_path(params.video_uri, workdir)
    audio_src = local_path(params.audio_uri, workdir)
    source_video, source_audio = probe_media(str(video_src), workdir), probe_media(str(audio_src), workdir)
    video, audio = workdir / "preview-video.mp4", workdir / "preview-dub.wav"
    limit = str(PREVIEW_MAX_SECONDS)
    run_ffmpeg(["-i", video_src, "-t", limit, "-map", "0:v:0", "-an", "-sn", "-vf", scale_filter(),
                "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                "-pix_fmt", "yuv420p", video], what=f"making the preview video of {params.video_uri}")
    run_ffmpeg(["-i", audio_src, "-t", limit, "-map", "0:a:0", "-vn", "-c:a", "pcm_s16le", audio],
               what=f"making the preview dub of {params.audio_uri}")
    made_video, made_audio = probe_media(str(video), workdir), probe_media(str(audio), workdir)
    return PreviewInputs(video=video, audio=audio, width=made_video.video.display_width,
                         height=made_video.video.display_height, video_s=made_video.duration_s,
                         audio_s=made_audio.duration_s, source_video_s=source_video.duration_s,
                         source_audio_s=source_audio.duration_s)
