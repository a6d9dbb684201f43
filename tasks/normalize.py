"""Stage 3, normalize: delivery audio (EBU R128, 48 kHz stereo), model audio (16 kHz mono) and a conformant
intermediate video (CFR, rotation applied, even dimensions, yuv420p, no audio).

Audio
    Linear normalization is one plain gain (what ffmpeg's two-pass ``loudnorm`` applies with ``linear=true``; it
    keeps the dynamics of the speech), computed from the source's BS.1770 measurement (pyloudnorm's meter, made by
    validation already) and applied in one ffmpeg pass. When that gain would push the true peak over the ceiling
    (loudnorm would silently fall back to its *dynamic* mode, a compressor that also misses the target on short
    clips), Lipline **normalises then limits**: a gain to the target, then a look-ahead limiter run at 192 kHz (4x
    oversampling, the BS.1770 true-peak meter's rate) a little under the ceiling. The result is measured with
    pyloudnorm; if it is off by more than ``tolerance_lu`` (a downmix to stereo changes the loudness) or over the
    ceiling, the gain/limit is corrected and run again (at most a few times). Every resampling is followed by an
    explicit ``aformat`` (stack notes).

Video
    A source that is already conformant (H.264, yuv420p, CFR, even dimensions, no display rotation) is kept as it
    is (``-c:v copy``, audio dropped): no encode at all. With an engine that keeps its input frames (passthrough), the
    final encode is the intermediate's only reader, and it decodes anything: a CFR HEVC source with even dimensions,
    of any pixel format, rotated for display or not, at a variable frame rate or not, is kept as it is too
    (``bench/pipeline_overhead.py --cases 60s-hevc``); the final encode applies the rotation, and its frame feed
    resamples a variable rate as ffmpeg's ``fps`` filter does. Anything else is decoded with the rotation applied, padded to
    even dimensions, forced to CFR at the source rate and encoded once with a fast, visually lossless libx264
    setting (``ultrafast``, CRF 10).
"""

from __future__ import annotations

import math
import os
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
# Codecs an intermediate may keep when only the final encode reads it (`conformance_reasons`): what cameras and phones
# record, which MP4 holds as it is. Others (MPEG-4 Part 2, ProRes: MP4 cannot hold it, ...) are encoded as before.
ANY_CODEC_COPIES = ("h264", "hevc")
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
    method: str = Field(description="'linear' (one gain) or 'gain+limiter' (normalise, then limit)")
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
    variable_rate: bool = Field(False, description="The intermediate keeps the source's variable frame timing; its "
                                                   "reader shows frame i as the one on screen at i / fps "
                                                   "(`lipline.frames.FrameReader`); frame_count counts those")
    rotation: int = Field(0, description="Display rotation (degrees clockwise) the intermediate still carries, for its "
                                         "reader to apply (the final encode); 0 when conformed. width × height is "
                                         "the picture as shown")


# --------------------------------------------------------------------------------------------------- audio


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


def _gain_chain(gain_db: float) -> str:
    """A plain gain (linear normalization), to 48 kHz stereo."""
    return f"{_TO_STEREO},volume={gain_db:.4f}dB:precision=double,aresample={DELIVERY_RATE},{_OUT_FORMAT}"


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
    io = ["-i", src, "-map", "0:a:0", "-vn", "-sn", "-dn"]
    gain = target - before.integrated_lufs
    after = None
    if before.true_peak_dbtp is None or before.true_peak_dbtp + gain <= ceiling:
        # linear: one plain gain from the source's BS.1770 measurement (what loudnorm's linear mode applies,
        # without its two passes at 192 kHz); the result is measured, and corrected below if it misses
        method = "linear"
        run_ffmpeg([*io, "-af", _gain_chain(gain), "-c:a", "pcm_s24le", delivery],
                   what=f"normalizing the loudness of {src.name}")
        after = _measure(delivery)
    else:
        method = "gain+limiter"
    # normalise then limit (also the correction loop when the first result misses)
    limit_db = ceiling - 0.3
    for _ in range(4):
        if after is not None and abs(after.integrated_lufs - target) <= params.tolerance_lu \
                and (after.true_peak_dbtp is None or after.true_peak_dbtp <= ceiling):
            break
        if after is not None:
            gain += target - after.integrated_lufs  # e.g. a downmix to stereo changed the loudness
            if after.true_peak_dbtp is not None and after.true_peak_dbtp > ceiling:
                if method == "gain+limiter":
                    limit_db -= (after.true_peak_dbtp - ceiling) + 0.1
                method = "gain+limiter"
        chain = _gain_chain(gain) if method == "linear" else _gain_limit_chain(gain, limit_db)
        run_ffmpeg([*io, "-af", chain, "-c:a", "pcm_s24le", delivery], what=f"normalizing {src.name} ({method})")
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


def conformance_reasons(probe: MediaProbe, any_codec: bool = False) -> list[str]:
    """Why the video of `probe` cannot be stream-copied as the intermediate (empty list: it can).

    ``any_codec``: the intermediate is read only by the final encode and its frame feed (an engine that keeps its input
    frames), which decode any codec, convert any pixel format, apply a display rotation and resample a variable frame
    rate (the frame feed, `lipline.frames.FrameReader`): a codec in `ANY_CODEC_COPIES` (MP4 holds it as it is), any
    pixel format, a rotation and a variable rate are then no reason to re-encode. Odd dimensions still are."""
    v = probe.video
    if v is None:
        return ["no video stream"]
    reasons = []
    if v.codec not in (ANY_CODEC_COPIES if any_codec else ("h264",)):
        reasons.append(f"codec {v.codec} is not h264")
    if v.pix_fmt not in ("yuv420p", "yuvj420p") and not any_codec:
        reasons.append(f"pixel format {v.pix_fmt} is not yuv420p")
    if not v.constant_fps and not any_codec:
        reasons.append(f"variable frame rate (mean {v.fps:.3f} fps)")
    if v.rotation % 360 and not any_codec:
        reasons.append(f"display rotation {v.rotation}°")
    if v.width % 2 or v.height % 2:
        reasons.append(f"odd dimensions {v.width}x{v.height}")
    return reasons


def _frames_at_rate(path: Path, rate: Fraction) -> int:
    """Frames a variable-rate video lasts at `rate`, from its timestamps (no decode): the slots from its first
    frame to the end of its last (`lipline.frames.FrameReader` resamples it to those)."""
    with av.open(os.fspath(path)) as c:
        st = c.streams.video[0]
        tb = Fraction(st.time_base)
        spans = [(p.pts, p.pts + (p.duration or 0)) for p in c.demux(st) if p.size and p.pts is not None]
    if not spans:
        return 0
    first, last = min(s for s, _ in spans), max(s for s, _ in spans)
    end = max(e for _, e in spans)
    return max(round((last - first) * tb * rate) + 1, round((end - first) * tb * rate))


def _count_frames(path: Path) -> tuple[int, Fraction | None]:
    """Frames of the first video stream by demuxing (no decode)."""
    with av.open(os.fspath(path)) as c:
        st = c.streams.video[0]
        n = sum(1 for p in c.demux(st) if p.size and p.pts is not None)
        rate = st.average_rate or st.guessed_rate
        return n, (Fraction(rate) if rate else None)


def normalize_video(video_uri: str, out_dir: Path, probe: MediaProbe | None = None,
                    any_codec: bool = False) -> NormalizedVideo:
    """Make the conformant intermediate video ``out_dir/video.mp4`` (no audio) and describe it.

    Stream copy when the source is already conformant; otherwise one fast visually lossless encode that applies the
    rotation, pads odd dimensions by one pixel, converts to yuv420p and forces CFR at the source rate.
    ``any_codec`` (an engine that keeps its input frames): see `conformance_reasons`; e.g. a phone's CFR HEVC, portrait
    or not, is copied, not encoded once more before the final encode (`NormalizedVideo.rotation` says what to apply).
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
    reasons = conformance_reasons(probe, any_codec)
    out = out_dir / "video.mp4"
    if not reasons:
        run_ffmpeg(["-i", src, "-map", "0:v:0", "-an", "-sn", "-dn", "-c:v", "copy",
                    "-map_metadata", "-1", "-movflags", "+faststart", out], what=f"copying the video of {src.name}")
        frames = _count_frames(out)[0] if v.constant_fps else _frames_at_rate(out, rate)
        width, height, rotation = v.display_width, v.display_height, v.rotation % 360  # a copy keeps its rotation
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
        width, height, rotation = w + (w % 2), h + (h % 2), 0
    return NormalizedVideo(uri=str(out), fps=float(rate), fps_num=rate.numerator, fps_den=rate.denominator,
                           width=width, height=height, frame_count=frames, reencoded=bool(reasons), reasons=reasons,
                           rotation=rotation, variable_rate=not reasons and not v.constant_fps)


# --------------------------------------------------------------------------------------------------- tasks


@task(name="normalize-audio", description="EBU R128 two-pass loudness normalization + 16 kHz model audio")
def normalize_audio_task(audio_uri: str, out_dir: Path, target_lufs: float = -16.0,
                         true_peak_db: float = -1.0, before: LoudnessMeasure | None = None) -> NormalizedAudio:
    return normalize_audio(audio_uri, out_dir, target_lufs, true_peak_db, before=before)


@task(name="normalize-video", description="CFR, rotation applied, even dimensions, yuv420p (stream copy if already)")
def normalize_video_task(video_uri: str, out_dir: Path, probe: MediaProbe | None = None,
                         any_codec: bool = False) -> NormalizedVideo:
    return normalize_video(video_uri, out_dir, probe, any_codec)
