"""Small typed records that move between stages. Each serialises to JSON for the store, artifacts and `--json`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["video", "audio", "subtitles", "intro", "outro"]
Severity = Literal["fail", "fixable", "warn"]
Verdict = Literal["pass", "warn", "fail"]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VideoInfo(Record):
    codec: str
    width: int = Field(description="Stored width in pixels (before display rotation)")
    height: int
    display_width: int = Field(description="Width after the display rotation is applied")
    display_height: int
    rotation: int = Field(0, description="Clockwise display rotation in degrees: 0, 90, 180 or 270")
    pix_fmt: str | None = None
    fps: float = Field(description="Mean frame rate from decoded timestamps")
    nominal_fps: float | None = Field(None, description="Frame rate the container declares")
    constant_fps: bool
    frame_count: int = Field(description="Frames actually decoded")
    duration_s: float = Field(description="Duration from decoded frames (headers are not trusted)")


class AudioInfo(Record):
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None = None
    sample_count: int = Field(description="Samples actually decoded per channel")
    duration_s: float = Field(description="Duration from decoded samples")


class MediaProbe(Record):
    """What a media file really contains, measured by decoding it to the end with PyAV."""

    uri: str
    size_bytes: int
    container: str | None
    duration_s: float = Field(description="Longest decoded stream")
    video: VideoInfo | None = None
    audio: AudioInfo | None = None
    decode_error: str | None = Field(None, description="Why decoding stopped early (truncated/corrupt), if it did")


class Violation(Record):
    rule: str
    severity: Severity
    observed: str
    expected: str
    hint: str


class ValidationReport(Record):
    file: str
    role: Role
    verdict: Verdict
    violations: list[Violation] = []
    probe: MediaProbe | None = None

    @staticmethod
    def verdict_of(violations: list[Violation]) -> Verdict:
        if any(v.severity == "fail" for v in violations):
            return "fail"
        return "warn" if violations else "pass"

    def cli_dict(self) -> dict:
        """The `lipline validate --json` shape: file, role, verdict, violations."""
        return self.model_dump(include={"file", "role", "verdict", "violations"})


class LoudnessMeasure(Record):
    integrated_lufs: float
    true_peak_dbtp: float | None = None


class Segment(Record):
    """One piece of the job between two silences, frame-aligned to the normalized video."""

    index: int
    start_frame: int
    end_frame: int = Field(description="Exclusive")
    fps: float
    video_uri: str
    audio_uri: str = Field(description="16 kHz mono model audio for this segment")

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps


class EngineResult(Record):
    segment_index: int
    uri: str
    engine: str
    engine_version: str
    dry_run: bool = Field(description="True when the engine does not lip-sync (passthrough)")
    rungs: list[str] = Field(default_factory=list, description="Out-of-memory ladder rungs taken")
    seconds: float
