"""Stage 3, normalize: delivery audio (EBU R128, 48 kHz stereo), model audio (16 kHz mono) and a conformant
intermediate video (CFR, rotation applied, even dimensions, yuv420p, no audio).

Audio
    Two-pass ffmpeg ``loudnorm``: pass 1 measures (``print_format=json``), pass 2 applies the measured values with
    ``linear=true``, which is a plain gain and keeps the dynamics of the speech. When the gain needed to reach the
    target would push the true peak over the ceiling, loudnorm silently falls back to its *dynamic* mode (a
    compressor that also misses the target on short clips); Lipline detects that from the pass-2 report (or predicts
    it from pass 1) and instead **normalises then limits**: a gain to the target, then a look-ahead limiter run at
    192 kHz (4x oversampling, the BS.1770 true-peak meter's rate) a little under the ceiling. The result is measured
    with pyloudnorm; if it is off by more than ``tolerance_lu`` or over the ceiling, the gain/limit is corrected and
    run again (at most a few times). Every resampling is followed by an explicit ``aformat`` (stack notes).

Video
    A source that is already conformant (H.264, yuv420p, CFR, even dimensions, no display rotation) is kept as it
    is (``-c:v copy``, audio dropped): no encode at all. Anything else is decoded with the rotation applied, padded to
    even dimensions, forced to CFR at the source rate and encoded once with a fast, visually lossless libx264
    setting (``ultrafast``, CRF 10).
"""

from __future__ import annotations

import json
import math
import os
import re
from fractions import Fraction
from pathlib import Path

import av
import soundfile as sf
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from lipline.errors import InputError, MediaToolError
from lipline.params import LOUDNESS_PRESETS, LoudnessPreset
from lipline.records import LoudnessMeasure, MediaProbe, Record, VideoInfo
from lipline.media import run_ffmpeg
from lipline.tasks.probe import STANDARD_RATES, exact_frame_rate
from lipline.uris import local_path

__all__ = [
    "LOUDNESS_PRESETS", "LoudnessPreset", "AudioNormalizeParams", "NormalizedAudio", "NormalizedVideo",
    "INTERMEDIATE_X264", "normalize_audio", "normalize_video", "normalize_audio_task", "normalize_video_task",
    "conformance_reasons", "fps_fraction", "source_rate", "target_for", "STANDARD_RATES",
]

DELIVERY_RATE = 48000
MODEL_RATE = 16000
OVERSAMPLED_RATE = 192000
# Fast, visually lossless intermediate (CAVLC, no B-frames: cheap to write and to decode again).
INTERMEDIATE_X264: dict[str, str] = {"preset": "ultrafast", "crf": "10"}


def target_for(preset: LoudnessPreset) -> float:
    """The loudness target (LUFS) of a preset: default −16, broadcast −23 (EBU R128), streaming −14."""
    return LOUDNESS_PRESETS[preset]


class AudioNormalizeParams(BaseModel):
    """Typed parameters of `normalize_audio`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_lufs: float = Field(-16.0, ge=-40.0, le=-5.0, description="Integrated loudness target (EBU R128, LUFS)")
    true_peak_db: float = Field(-1.0, ge=-9.0, le=0.0, description="True-peak ceiling (dBTP)")
    tolerance_lu: float = Field(0.5, gt=0.0, le=1.0, description="Correct the result when it misses the target by more")

    @classmethod
    def from_preset(cls, preset: LoudnessPreset, **kwargs) -> "AudioNormalizeParams":
        return cls(target_lufs=LOUDNESS_PRESETS[preset], **kwargs)


class NormalizedAudio(Record):
    delivery_uri: str = Field(description="48 kHz stereo WAV (PCM 24-bit) at the loudness target")
    model_uri: str = Field(description="16 kHz mono WAV (PCM 16-bit) made from the normalized delivery audio")
    before: LoudnessMeasure
    after: LoudnessMeasure
    target_lufs: float
    true_peak_db: float
    method: str = Field(description="'linear' (two-pass loudnorm) or 'gain+limiter' (normalise, then limit)")
    duration_s: float = Field(description="Delivery audio duration from its samples")


class NormalizedVideo(Record):
    uri: str
    fps: float
    fps_num: int = Field(description="Exact frame rate numerator (fps = fps_num / fps_den)")
    fps_den: int
    width: int
    height: int
    frame_count: int
    reencoded: bool
    reasons: list[str] = Field(default_factory=list, description="Why the video was re-encoded (empty: stream copy)")


# --------------------------------------------------------------------------------------------------- audio


def _loudnorm_report(stderr: bytes) -> dict:
    text = stderr.decode("utf-8", "replace")
    blocks = re.findall(r"\{[^{}]*\}", text)
    for block in reversed(blocks):
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            continue
        if "input_i" in data:
            return data
    raise MediaToolError("loudnorm printed no JSON report: " + " | ".join(text.strip().splitlines()[-4:]))


def _measure(path: Path) -> LoudnessMeasure:
    from lipline.tasks.audio_stream import measure_file

    m = measure_file(path)  # one streaming pass, constant memory
    if m is None:
        return LoudnessMeasure(integrated_lufs=float("-inf"), true_peak_dbtp=float("-inf"))
    return LoudnessMeasure(integrated_lufs=round(m.integrated_lufs, 3), true_peak_dbtp=round(m.true_peak_dbtp, 3))


def _finite(value: float, default: float) -> float:
    return value if value is not None and math.isfinite(value) else default


_OUT_FORMAT = f"aformat=sample_fmts=s32:sample_rates={DELIVERY_RATE}:channel_layouts=stereo"
_TO_STEREO = "aformat=channel_layouts=stereo"


def _gain_limit_chain(gain_db: float, ceiling_db: float) -> str:
    """Normalise (a gain), then limit the true peak: look-ahead limiter at 4x the delivery rate."""
    limit = min(1.0, max(0.0625, 10 ** (ceiling_db / 20)))
    return ",".join([
        _TO_STEREO,
        f"volume={gain_db:.4f}dB:precision=double",
        f"aresample={OVERSAMPLED_RATE}",
        f"aformat=sample_fmts=dbl:sample_rates={OVERSAMPLED_RATE}:channel_layouts=stereo",
        f"alimiter=limit={limit:.6f}:attack=1:release=60:level=false:latency=true",
        f"aresample={DELIVERY_RATE}",
        _OUT_FORMAT,
    ])


def normalize_audio(audio_uri: str, out_dir: Path, target_lufs: float = -16.0, true_peak_db: float = -1.0,
                    *, tolerance_lu: float = 0.5, before: LoudnessMeasure | None = None) -> NormalizedAudio:
    """Loudness-normalize `audio_uri` (any audio ffmpeg decodes, or the audio of a video) into `out_dir`.

    Writes ``delivery.wav`` (48 kHz stereo, PCM 24-bit, `target_lufs` ±`tolerance_lu`, true peak ≤ `true_peak_db`)
    and ``model.wav`` (16 kHz mono PCM 16-bit, made from the delivery audio) and returns their URIs with the
    pyloudnorm measurements before and after. `before`: the source's measurement when validation already made it
    (the source is then not measured twice).
    """
    params = AudioNormalizeParams(target_lufs=target_lufs, true_peak_db=true_peak_db, tolerance_lu=tolerance_lu)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    src = local_path(audio_uri, out_dir).absolute()
    delivery = out_dir / "delivery.wav"
    model = out_dir / "model.wav"
    before = before or _measure(src)
    if not math.isfinite(before.integrated_lufs) or before.integrated_lufs < -70:
        raise InputError(str(audio_uri), "no speech", f"integrated loudness {before.integrated_lufs} LUFS (silent)",
                         "Provide an audio track that contains speech.")

    target, ceiling = params.target_lufs, params.true_peak_db
    lra = 50.0  # never the reason for a dynamic fallback: we only want a gain
    base = f"I={target}:TP={ceiling}:LRA={lra}"
    io = ["-i", src, "-map", "0:a:0", "-vn", "-sn", "-dn"]
    # pass 1: measure
    proc = run_ffmpeg(["-loglevel", "info", *io, "-af", f"{_TO_STEREO},loudnorm={base}:print_format=json",
                       "-f", "null", "-"], what=f"measuring the loudness of {src.name}")
    m = _loudnorm_report(proc.stderr)
    mi = _finite(float(m["input_i"]), before.integrated_lufs)
    mtp = _finite(float(m["input_tp"]), before.true_peak_dbtp or 0.0)
    mlra = _finite(float(m["input_lra"]), 0.0)
    mth = _finite(float(m["input_thresh"]), -70.0)

    method = "linear"
    linear_possible = mtp + (target - mi) <= ceiling
    if linear_possible:
        # pass 2: linear (a gain) with the measured values
        second = (f"{_TO_STEREO},loudnorm={base}:measured_I={mi}:measured_TP={mtp}:measured_LRA={mlra}:"
                  f"measured_thresh={mth}:offset={_finite(float(m['target_offset']), 0.0)}:linear=true:"
                  f"print_format=json,aresample={DELIVERY_RATE},{_OUT_FORMAT}")
        proc = run_ffmpeg(["-loglevel", "info", *io, "-af", second, "-c:a", "pcm_s24le", delivery],
                          what=f"normalizing the loudness of {src.name}")
        if _loudnorm_report(proc.stderr).get("normalization_type") != "linear":
            method = "gain+limiter"  # ffmpeg fell back to dynamic mode: redo as normalise-then-limit
    else:
        method = "gain+limiter"

    if method == "linear":
        after = _measure(delivery)
    else:
        after = None
    # normalise then limit (also the correction loop when the linear result misses)
    gain = target - mi
    limit_db = ceiling - 0.3
    for _ in range(4):
        if after is not None and abs(after.integrated_lufs - target) <= params.tolerance_lu \
                and (after.true_peak_dbtp is None or after.true_peak_dbtp <= ceiling):
            break
        if after is not None:
            if method == "linear":
                gain = target - mi  # start the fallback from the plain gain
                method = "gain+limiter"
            else:
                gain += target - after.integrated_lufs
                if after.true_peak_dbtp is not None and after.true_peak_dbtp > ceiling:
                    limit_db -= (after.true_peak_dbtp - ceiling) + 0.1
        run_ffmpeg([*io, "-af", _gain_limit_chain(gain, limit_db), "-c:a", "pcm_s24le", delivery],
                   what=f"normalizing and limiting {src.name}")
        after = _measure(delivery)
    assert after is not None
    if abs(after.integrated_lufs - target) > 1.0 or (after.true_peak_dbtp or -99) > ceiling + 0.05:
        raise MediaToolError(f"loudness normalization of {src.name} missed: {after.integrated_lufs:.2f} LUFS, "
                             f"{after.true_peak_dbtp} dBTP (target {target} LUFS, ≤ {ceiling} dBTP)")

    run_ffmpeg(["-i", delivery, "-af",
                f"aresample={MODEL_RATE},aformat=sample_fmts=s16:sample_rates={MODEL_RATE}:channel_layouts=mono",
                "-c:a", "pcm_s16le", model], what="making the 16 kHz model audio")
    duration = sf.info(os.fspath(delivery)).frames / DELIVERY_RATE
    return NormalizedAudio(delivery_uri=str(delivery), model_uri=str(model), before=before, after=after,
                           target_lufs=target, true_peak_db=ceiling, method=method, duration_s=duration)


# --------------------------------------------------------------------------------------------------- video


def fps_fraction(fps: float, nominal: float | None = None) -> Fraction:
    """An exact rate for a float one (a record without ``rate``): the closest standard rate within 0.5 %
    (29.97 → 30000/1001, 30.0 → 30, never the first one near), else the value itself (denominators ≤ 1001)."""
    value = fps if fps and fps > 0 else nominal
    if not value or value <= 0:
        raise ValueError(f"invalid frame rate {fps!r}")
    return exact_frame_rate(Fraction(value), tolerance=0.005)


def source_rate(video: VideoInfo) -> Fraction:
    """The exact rate to deliver a source at: its probed rational rate (floats only for records without one)."""
    return video.frame_rate or fps_fraction(video.fps, video.nominal_fps)


def conformance_reasons(probe: MediaProbe) -> list[str]:
    """Why the video of `probe` cannot be stream-copied as the intermediate (empty list: it can)."""
    v = probe.video
    if v is None:
        return ["no video stream"]
    reasons = []
    if v.codec not in ("h264",):
        reasons.append(f"codec {v.codec} is not h264")
    if v.pix_fmt not in ("yuv420p", "yuvj420p"):
        reasons.append(f"pixel format {v.pix_fmt} is not yuv420p")
    if not v.constant_fps:
        reasons.append(f"variable frame rate (mean {v.fps:.3f} fps)")
    if v.rotation % 360:
        reasons.append(f"display rotation {v.rotation}°")
    if v.width % 2 or v.height % 2:
        reasons.append(f"odd dimensions {v.width}x{v.height}")
    return reasons


def _count_frames(path: Path) -> tuple[int, Fraction | None]:
    """Frames of the first video stream by demuxing (no decode)."""
    with av.open(os.fspath(path)) as c:
        st = c.streams.video[0]
        n = sum(1 for p in c.demux(st) if p.size and p.pts is not None)
        rate = st.average_rate or st.guessed_rate
        return n, (Fraction(rate) if rate else None)


def normalize_video(video_uri: str, out_dir: Path, probe: MediaProbe | None = None) -> NormalizedVideo:
    """Make the conformant intermediate video ``out_dir/video.mp4`` (no audio) and describe it.

    Stream copy when the source is already conformant; otherwise one fast visually lossless encode that applies the
    rotation, pads odd dimensions by one pixel, converts to yuv420p and forces CFR at the source rate.
    """
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    src = local_path(video_uri, out_dir).absolute()
    if probe is None:
        from lipline.tasks.probe import probe_media

        probe = probe_media(str(src), workdir=out_dir)
    v = probe.video
    if v is None:
        raise InputError(str(video_uri), "video stream", "no video stream", "Provide a file with a video track.")
    rate = source_rate(v)
    reasons = conformance_reasons(probe)
    out = out_dir / "video.mp4"
    if not reasons:
        run_ffmpeg(["-i", src, "-map", "0:v:0", "-an", "-sn", "-dn", "-c:v", "copy",
                    "-map_metadata", "-1", "-movflags", "+faststart", out], what=f"copying the video of {src.name}")
        frames, _ = _count_frames(out)
        width, height = v.width, v.height
    else:
        vf = ",".join([
            f"fps={rate.numerator}/{rate.denominator}",
            "pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0:black",
            "format=yuv420p",
        ])
        # ffmpeg applies the display rotation while decoding (autorotate, the default) and then writes no display
        # matrix; -display_rotation is not needed. Timestamps restart at zero.
        run_ffmpeg(["-i", src, "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", vf, "-fps_mode", "cfr",
                    "-r", f"{rate.numerator}/{rate.denominator}",
                    "-c:v", "libx264", "-preset", INTERMEDIATE_X264["preset"], "-crf", INTERMEDIATE_X264["crf"],
                    "-pix_fmt", "yuv420p", "-map_metadata", "-1", "-movflags", "+faststart", out],
                   what=f"conforming the video of {src.name}")
        frames, _ = _count_frames(out)
        w, h = v.display_width, v.display_height
        width, height = w + (w % 2), h + (h % 2)
    return NormalizedVideo(uri=str(out), fps=float(rate), fps_num=rate.numerator, fps_den=rate.denominator,
                           width=width, height=height, frame_count=frames, reencoded=bool(reasons), reasons=reasons)


# --------------------------------------------------------------------------------------------------- tasks


@task(name="normalize-audio", description="EBU R128 two-pass loudness normalization + 16 kHz model audio")
def normalize_audio_task(audio_uri: str, out_dir: Path, target_lufs: float = -16.0,
                         true_peak_db: float = -1.0, before: LoudnessMeasure | None = None) -> NormalizedAudio:
    return normalize_audio(audio_uri, out_dir, target_lufs, true_peak_db, before=before)


@task(name="normalize-video", description="CFR, rotation applied, even dimensions, yuv420p (stream copy if already)")
def normalize_video_task(video_uri: str, out_dir: Path, probe: MediaProbe | None = None) -> NormalizedVideo:
    return normalize_video(video_uri, out_dir, probe)
