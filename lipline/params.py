"""The parameters of a `localize` job: one pydantic model. Prefect renders it as the deployment's UI form; the
CLI, schedules and API callers fill in the same model, so bad values are refused before any worker starts."""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lipline.records import LipsyncOptions, QualityGateParams

AudioLonger = Literal["pingpong", "loop", "freeze", "fail"]
VideoLonger = Literal["trim", "pad-silence"]
LoudnessPreset = Literal["default", "broadcast", "streaming"]
LOUDNESS_PRESETS: dict[str, float] = {"default": -16.0, "broadcast": -23.0, "streaming": -14.0}
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_length_mode(value: str | None) -> dict[str, str]:
    """Map the CLI's single `--length-mode` onto the two explicit parameters."""
    if value is None:
        return {}
    if value in AudioLonger.__args__:
        return {"audio_longer": value}
    if value in VideoLonger.__args__:
        return {"video_longer": value}
    choices = ", ".join(AudioLonger.__args__ + VideoLonger.__args__)
    raise ValueError(f"--length-mode {value!r} is not one of {choices}")


class LocalizeParams(BaseModel):
    """One localization job: inputs, where the deliverable goes, and how it is made."""

    model_config = ConfigDict(extra="forbid")

    video_uri: str = Field(description="Talking-head video: a path or URI (s3://bucket/key.mp4)")
    audio_uri: str = Field(description="Dubbed speech track: a path or URI")
    subtitles_uri: Optional[str] = Field(None, description="SRT, ASS or VTT subtitles (any encoding)")
    intro_uri: Optional[str] = Field(None, description="Intro bumper video, conformed to the main clip")
    outro_uri: Optional[str] = Field(None, description="Outro bumper video, conformed to the main clip")
    store: Optional[str] = Field(None, description="Store root (folder or fsspec URI); default from LIPLINE_STORE or ./lipline-store")
    job_id: Optional[str] = Field(None, description="Job id: letters, digits, '.', '_' or '-'; generated when empty")
    replace: bool = Field(False, description="Replace the deliverable of an already completed job with the same id")
    recompute: bool = Field(False, description="Recompute every segment, even those whose result (same inputs, "
                                               "engine, weights and options) is already in the store's cache")
    engine: str = Field("auto", description="Lip-sync engine: 'latentsync' (needs its weights), 'passthrough' (a dry "
                                            "run, no lip-sync) or 'auto' (latentsync when its weights are in the "
                                            "cache, else passthrough with a notice)")
    lipsync: LipsyncOptions = Field(default_factory=LipsyncOptions,
                                    description="LatentSync settings: version, weights, steps, guidance, seed, "
                                                "precision, which face, silences, window overlap")
    quality_gate: QualityGateParams = Field(default_factory=QualityGateParams,
                                            description="Lip-sync quality gate: measure, retry with new seeds, flag")
    loudness_lufs: float = Field(-16.0, ge=-40.0, le=-5.0, description="Delivery loudness target (EBU R128 integrated, LUFS)")
    true_peak_db: float = Field(-1.0, ge=-9.0, le=0.0, description="True-peak ceiling in dBTP")
    audio_longer: AudioLonger = Field("pingpong", description="When the dub is longer than the video: how to extend the picture")
    video_longer: VideoLonger = Field("trim", description="When the video is longer than the dub: trim it or pad the audio with silence")
    max_segment_s: float = Field(20.0, gt=1.0, le=30.0, description="Longest segment between silences (Whisper's window caps it at 30 s)")
    burn_subtitles: bool = Field(True, description="Burn the subtitles into the picture")
    soft_subtitles: bool = Field(True, description="Also attach a subtitle track and .srt/.vtt sidecars")
    x264_preset: X264Preset = Field("veryfast", description="Encoder preset of the one final encode")
    crf: int = Field(20, ge=0, le=51, description="Quality of the final encode (lower = better, larger)")
    contract_overrides: dict[str, float] = Field(default_factory=dict, description="Contract thresholds to override, by rule key (see data_contracts/README.md)")

    @field_validator("engine")
    @classmethod
    def _engine_is_known(cls, value: str) -> str:
        from lipline.models.registry import engine_specs

        known = ["auto", *(s.name for s in engine_specs("video"))]
        if value not in known:
            raise ValueError(f"unknown engine {value!r}; choose one of: {', '.join(known)}")
        return value

    @field_validator("contract_overrides")
    @classmethod
    def _override_keys_are_known(cls, value: dict[str, float]) -> dict[str, float]:
        from lipline.tasks.validate import override_keys

        unknown = sorted(k for k in value if k not in override_keys())
        if unknown:
            raise ValueError(f"unknown contract override key(s) {', '.join(unknown)}; valid keys: "
                             + ", ".join(sorted(override_keys())))
        return value

    @field_validator("job_id")
    @classmethod
    def _job_id_is_a_safe_key(cls, value: str | None) -> str | None:
        if value is not None and not JOB_ID.match(value):
            raise ValueError(f"job id {value!r} must match {JOB_ID.pattern} (it becomes a folder/key prefix)")
        return value

    @classmethod
    def with_preset(cls, preset: LoudnessPreset, **kwargs) -> "LocalizeParams":
        return cls(loudness_lufs=LOUDNESS_PRESETS[preset], **kwargs)
