"""Small typed records that move between stages. Each serialises to JSON for the store, artifacts and `--json`."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["video", "audio", "subtitles", "intro", "outro"]
Severity = Literal["fail", "fixable", "warn"]
Verdict = Literal["pass", "warn", "fail"]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


RATE_PATTERN = r"^[1-9][0-9]*/[1-9][0-9]*$"


def rate_text(rate: Fraction | int | str) -> str:
    """An exact frame rate as the "num/den" text the records carry (and ffmpeg accepts): "30/1", "30000/1001"."""
    rate = Fraction(rate)
    return f"{rate.numerator}/{rate.denominator}"


class VideoInfo(Record):
    codec: str
    width: int = Field(description="Stored width in pixels (before display rotation)")
    height: int
    display_width: int = Field(description="Width after the display rotation is applied")
    display_height: int
    rotation: int = Field(0, description="Clockwise display rotation in degrees: 0, 90, 180 or 270")
    pix_fmt: str | None = None
    fps: float = Field(description="Frame rate from decoded timestamps: `rate` as a float for a constant-rate "
                                   "stream, the mean rate of a variable-rate one")
    rate: str | None = Field(None, pattern=RATE_PATTERN,
                             description="Exact rational frame rate 'num/den' (e.g. '30/1', '30000/1001'): the declared "
                                         "or standard rate the decoded timestamps confirm")
    nominal_fps: float | None = Field(None, description="Frame rate the container declares")
    constant_fps: bool
    frame_count: int = Field(description="Frames actually decoded")
    duration_s: float = Field(description="Duration from decoded frames (headers are not trusted)")

    @property
    def frame_rate(self) -> Fraction | None:
        """`rate` as a Fraction (None for an old record without it)."""
        return Fraction(self.rate) if self.rate else None


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
    header_duration_s: float | None = Field(None, description="Duration the container header claims (never used "
                                                              "as a measurement: headers lie)")
    video: VideoInfo | None = None
    audio: AudioInfo | None = None
    decode_error: str | None = Field(None, description="Why decoding stopped early (truncated/corrupt), if it did")


class Violation(Record):
    rule: str
    severity: Severity
    observed: str
    expected: str
    hint: str
    cues: list[int] | None = Field(None, description="Subtitle cue numbers the rule fired on (cue-scope rules)")


class LoudnessMeasure(Record):
    integrated_lufs: float
    true_peak_dbtp: float | None = None


class ValidationReport(Record):
    file: str
    role: Role
    verdict: Verdict
    violations: list[Violation] = []
    probe: MediaProbe | None = None
    loudness: LoudnessMeasure | None = Field(None, description="BS.1770 measurement of an audio input (reused as "
                                                               "normalize's 'before')")

    @staticmethod
    def verdict_of(violations: list[Violation]) -> Verdict:
        if any(v.severity == "fail" for v in violations):
            return "fail"
        return "warn" if violations else "pass"

    def cli_dict(self) -> dict:
        """The `lipline validate --json` shape: file, role, verdict, violations (`cues` only where it applies)."""
        out = self.model_dump(include={"file", "role", "verdict", "violations"})
        for violation in out["violations"]:
            if violation.get("cues") is None:
                violation.pop("cues", None)
        return out


class Segment(Record):
    """One piece of the job between two silences, frame-aligned to the normalized video."""

    index: int
    start_frame: int
    end_frame: int = Field(description="Exclusive")
    fps: float
    video_uri: str = Field(description="The segment's video, or the whole normalized video when `frame_range` is set")
    audio_uri: str = Field(description="16 kHz mono model audio for this segment")
    frame_range: tuple[int, int] | None = Field(
        None, description="Frames [start, end) of `video_uri` that make this segment (a forward plan writes no "
                          "segment files); None: the whole file is the segment")
    face_track_uri: str | None = Field(None, description="The face track of this segment's frames (one entry per "
                                                         "frame), when the job tracked faces")
    content_key: str | None = Field(None, description="SHA-256 of everything this segment's input depends on "
                                                      "(tasks/segment_results.py); keys its engine result")

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps


class FrameSpan(Record):
    """Frames [start, end) of a segment and why they were treated one way (generated, or passed through)."""

    start: int
    end: int = Field(description="Exclusive")
    reason: str = Field(description="generated | no face | too small | too turned | silence")


class EngineResult(Record):
    """What an engine returned for one segment: where its frames are and what it did to them."""

    segment_index: int
    uri: str
    frame_range: tuple[int, int] | None = Field(None, description="Frames [start, end) of `uri` (an engine that "
                                                                  "keeps its input frames returns its input)")
    engine: str
    engine_version: str
    dry_run: bool = Field(description="True when the engine does not lip-sync (passthrough)")
    smoke_model: bool = Field(False, description="True when a random-weight smoke model made the frames")
    rungs: list[str] = Field(default_factory=list, description="Out-of-memory ladder rungs taken")
    seconds: float
    frames: int = Field(0, description="Frames in the engine's output")
    generated: list[FrameSpan] = Field(default_factory=list, description="Frame spans the model generated")
    passed_through: list[FrameSpan] = Field(default_factory=list,
                                            description="Frame spans left as the source frames, with the reason")
    settings: dict = Field(default_factory=dict, description="Model version, checkpoints, steps, guidance, seed, "
                                                             "precision and what the engine measured")
    reused: bool = Field(False, description="True when this result was finished earlier (same result key) and "
                                            "reused, not recomputed")
    cache_key: str | None = Field(None, description="Result key under STORE/_cache/segments/ (engines that write "
                                                    "frames)")
    worker: dict = Field(default_factory=dict, description="Where it ran: host, process, worker, task run, queue "
                                                           "and engine seconds, model loads in that process")


class LipsyncOptions(Record):
    """How a lip-sync engine works on a job (the `latentsync` engine reads all of it; `passthrough` none)."""

    model_version: Literal["1.5", "1.6"] = Field("1.5", description="LatentSync release: 1.5 (256 px) or 1.6 (512 px)")
    weights_dir: str | None = Field(None, description="Weights cache folder (`lipline weights pull --cache-dir` or "
                                                      "`lipline weights smoke`); default LIPLINE_WEIGHTS_DIR or "
                                                      "the Hugging Face cache")
    steps: int = Field(20, ge=1, le=200, description="Denoising steps (20 for ddim; dpmpp is meant for 10)")
    sampler: Literal["ddim", "dpmpp"] = Field(
        "ddim", description="ddim = the official sampler; dpmpp = DPM-Solver++ (2nd order), experimental: about half "
                            "the model time at steps=10, its difference to ddim-20 is not yet measured with the "
                            "official weights")
    guidance: float = Field(1.5, ge=1.0, le=10.0, description="Classifier-free audio guidance (1.0 = off)")
    seed: int = Field(1247, ge=0, description="Random seed (the official default is 1247)")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="Working precision: auto = fp16 on Ampere or newer GPUs, else fp32")
    face: str = Field("largest", description="Which face to lip-sync: largest | index=K (K-th from the left) | "
                                             "bbox=x,y,w,h")
    keep_mouth_in_silence: bool = Field(True, description="Keep the original mouth during dub silences >= 0.5 s")
    window_overlap: int = Field(2, ge=0, le=8, description="Frames shared by consecutive 16-frame windows, "
                                                           "cross-faded (0 = the official windows)")

    @field_validator("face")
    @classmethod
    def _face_choice_parses(cls, value: str) -> str:
        from lipline.models.face.choice import FaceChoice

        try:
            return str(FaceChoice.parse(value))
        except Exception as exc:  # noqa: BLE001 - the parser's own message says what is wrong
            raise ValueError(str(exc)) from None


class QualityGateParams(Record):
    """How the job judges lip-sync (the form's "quality gate" group)."""

    enabled: bool = Field(True, description="Measure every generated segment's AV offset after the engine")
    retries: int = Field(2, ge=0, le=5, description="Re-runs of a failing segment, each with the next seed")
    on_fail: Literal["flag", "fail"] = Field("flag", description="After the retries: flag the segment 'needs review' "
                                                                 "and deliver (flag), or fail the job (fail)")


class PostParams(Record):
    """Settings of the one final encode (stage 6): subtitles, bumpers and the delivery codec parameters."""

    burn_subtitles: bool = Field(True, description="Burn the subtitles into the picture of the main part (libass)")
    soft_subtitles: bool = Field(True, description="Add the subtitles as a selectable mov_text track and write "
                                                   ".srt/.vtt sidecars")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = Field(
        "veryfast", description="libx264 preset of the single final encode (the largest cost of a job on CPU). "
                                "'veryfast' stays visually clean at the default CRF; slower presets make smaller "
                                "files for more encode time")
    crf: int = Field(20, ge=0, le=51, description="libx264 constant rate factor (lower = better, bigger); "
                                                  "18-23 is the usual delivery range")
    audio_bitrate: str = Field("192k", pattern=r"^\d+k$", description="AAC bitrate of the delivery audio")
    subtitle_language: str = Field("und", pattern=r"^[a-z]{3}$",
                                   description="ISO 639-2 language tag of the soft subtitle track")


class FinalOutputs(Record):
    """Local files written by the final encode, before the archive stage uploads them."""

    video_path: str = Field(description="final.mp4: H.264 yuv420p + AAC 48 kHz stereo (+ mov_text), faststart")
    srt_path: str | None = Field(None, description="UTF-8 SRT sidecar, times shifted by the intro")
    vtt_path: str | None = Field(None, description="WebVTT sidecar, times shifted by the intro")
    intro_offset_s: float = Field(0.0, description="Where the main part starts in the deliverable")
    duration_s: float = Field(description="Expected duration: intro + main + outro frames / fps")
    fps: float = Field(description="Delivery frame rate = source frame rate")
    frame_count: int = Field(description="Expected video frames in final.mp4")
    rate: str = Field(pattern=RATE_PATTERN, description="Exact delivery frame rate 'num/den' (= the source's)")
