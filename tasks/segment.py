"""Stage 4, segment: cut the job at the pauses of the dub into frame-aligned pieces of at most `max_segment_s`.

The *output timeline* follows the dub (16 kHz model audio): it has ``total_frames`` frames at the normalized
video's rate. When the dub is longer than the video the picture is extended (`audio_longer`: ``pingpong``,
``loop``, ``freeze`` or ``fail``); when the video is longer it is trimmed, or kept and the audio padded with
silence (`video_longer`: ``trim`` or ``pad-silence``). The plan is pure data: for every output frame range it
records which source frames it shows (`FrameRun`: a start frame and a step of +1, −1 or 0), so a long job is a
handful of runs, never a per-frame list.

Cut points are frame boundaries in the middle of the longest pause (``librosa.effects.split``) inside each
`max_segment_s` window; a window without a pause is cut hard at its end. Segment audio is sliced at
``round(frame * 16000 / fps)`` so every slice spans exactly its frames.

`cut_segments` streams frames with PyAV (decode → encode, one decoder kept open and moved forward; seeks only for
jumps), so memory stays bounded: reversed runs are produced in chunks of at most ~192 MB of raw frames. A plan that
shows the source frames in order (equal lengths, trim, pad-silence) writes no video: its segments are frame ranges
of the normalized video.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile as sf
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from lipline.errors import InputError, MediaToolError
from lipline.frames import FrameReader, reverse_chunk, run_frames
from lipline.params import AudioLonger, VideoLonger, parse_length_mode
from lipline.records import Record, Segment
from lipline.tasks.pauses import Pause, Samples, find_pauses
from lipline.uris import local_path

__all__ = [
    "AudioLonger", "VideoLonger", "LengthModes", "FrameRun", "PlannedSegment", "SegmentPlan", "Pause",
    "WHISPER_WINDOW_S", "MODEL_RATE", "find_pauses", "plan_segments", "plan_from_samples", "cut_segments",
    "plan_segments_task", "cut_segments_task", "fps_fraction",
]

WHISPER_WINDOW_S = 30.0
from lipline.tasks.pauses import MODEL_RATE  # noqa: E402  (one definition)
SEGMENT_X264: dict[str, str] = {"preset": "ultrafast", "crf": "10"}


def fps_fraction(fps: float | Fraction) -> Fraction:
    """Exact rate of a float fps: 29.97002997 → 30000/1001, 25.0 → 25."""
    if isinstance(fps, Fraction):
        return fps
    return Fraction(fps).limit_denominator(1001)


class LengthModes(BaseModel):
    """What to do when the dub and the video differ in length (both explicit, with defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    audio_longer: AudioLonger = Field("pingpong", description="Dub longer: pingpong | loop | freeze | fail")
    video_longer: VideoLonger = Field("trim", description="Video longer: trim | pad-silence")

    @classmethod
    def of(cls, value: "LengthModes | str | dict | None") -> "LengthModes":
        """Accept a `LengthModes`, a dict, or the CLI's single mode name (``'loop'``, ``'pad-silence'``, ...)."""
        if value is None:
            return cls()
        if isinstance(value, LengthModes):
            return value
        if isinstance(value, dict):
            return cls(**value)
        merged: dict[str, str] = {}
        for part in str(value).split(","):
            if part.strip():
                merged.update(parse_length_mode(part.strip()))
        return cls(**merged)


class FrameRun(Record):
    """Output frames [out_start, out_end) show source frames src_start, src_start+step, ... (step −1, 0 or +1)."""

    out_start: int
    out_end: int
    src_start: int
    step: Literal[-1, 0, 1] = 1

    @property
    def length(self) -> int:
        return self.out_end - self.out_start

    def source(self, out_index: int) -> int:
        return self.src_start + self.step * (out_index - self.out_start)

    def clip(self, lo: int, hi: int) -> "FrameRun | None":
        a, b = max(lo, self.out_start), min(hi, self.out_end)
        if a >= b:
            return None
        return FrameRun(out_start=a, out_end=b, src_start=self.source(a), step=self.step)


class PlannedSegment(Record):
    index: int
    start_frame: int
    end_frame: int = Field(description="Exclusive")
    audio_start: int = Field(description="First 16 kHz sample of the segment")
    audio_end: int = Field(description="Exclusive; = round(end_frame * 16000 / fps)")
    runs: list[FrameRun]

    @property
    def frame_count(self) -> int:
        return self.end_frame - self.start_frame

    def source_frames(self) -> list[int]:
        """The source frame shown at each of this segment's output frames, in order."""
        return [run.source(i) for run in self.runs for i in range(run.out_start, run.out_end)]


class SegmentPlan(Record):
    fps: float
    fps_num: int
    fps_den: int
    source_frames: int = Field(description="Frames of the normalized video")
    audio_samples: int = Field(description="Samples of the 16 kHz model audio before padding/trimming")
    sample_rate: int = MODEL_RATE
    total_frames: int = Field(description="Frames of the output timeline")
    total_samples: int = Field(description="16 kHz samples of the output timeline (= round(total_frames*16000/fps))")
    length_mode: str = Field(description="What was applied: equal | pingpong | loop | freeze | trim | pad-silence")
    audio_pad_s: float = Field(description="Silence appended to the dub (delivery audio too) to fill the timeline")
    audio_trim_s: float = Field(0.0, description="Dub cut from the end (< half a frame, rounding only)")
    max_segment_s: float
    runs: list[FrameRun]
    pauses: list[Pause]
    segments: list[PlannedSegment]

    @property
    def rate(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def is_identity(self) -> bool:
        """One segment showing every source frame once, in order: the normalized video can be used as is."""
        return (len(self.segments) == 1 and self.total_frames == self.source_frames and len(self.runs) == 1
                and self.runs[0].step == 1 and self.runs[0].src_start == 0)

    @property
    def is_forward(self) -> bool:
        """The timeline shows source frames 0, 1, 2, ... once each (identity, trim or pad-silence): no frame is
        synthesized, so an engine that leaves frames alone needs no segment files."""
        return len(self.runs) == 1 and self.runs[0].step == 1 and self.runs[0].src_start == 0

    def source_frame(self, out_index: int) -> int:
        for run in self.runs:
            if run.out_start <= out_index < run.out_end:
                return run.source(out_index)
        raise IndexError(out_index)

    def frame_map(self) -> list[int]:
        """Source frame of every output frame (for tests and small plans)."""
        return [run.source(i) for run in self.runs for i in range(run.out_start, run.out_end)]


# ------------------------------------------------------------------------------------------------ planning


def _sample_at(frame: int, rate: Fraction, sr: int) -> int:
    return round(Fraction(frame) * sr / rate)


def _timeline(n_frames: int, audio_frames: float, modes: LengthModes, audio_name: str, rate_f: float) -> tuple[int, str, list[FrameRun]]:
    """Total output frames, the mode applied and the frame runs."""
    if audio_frames > n_frames + 0.5:  # dub longer than the video
        total = max(1, math.ceil(audio_frames - 1e-6))
        mode = modes.audio_longer
        if mode == "fail":
            audio_s, video_s = audio_frames / rate_f, n_frames / rate_f
            raise InputError(audio_name, "length mismatch",
                             f"the dub lasts {audio_s:.2f} s but the video only {video_s:.2f} s",
                             "Use --length-mode pingpong, loop or freeze, or supply a longer video.")
        runs: list[FrameRun] = []
        if mode == "freeze":
            runs.append(FrameRun(out_start=0, out_end=n_frames, src_start=0, step=1))
            runs.append(FrameRun(out_start=n_frames, out_end=total, src_start=n_frames - 1, step=0))
        else:
            pos, k = 0, 0
            while pos < total:
                end = min(total, pos + n_frames)
                backwards = mode == "pingpong" and k % 2 == 1
                runs.append(FrameRun(out_start=pos, out_end=end, src_start=n_frames - 1 if backwards else 0,
                                     step=-1 if backwards else 1))
                pos, k = end, k + 1
        return total, mode, runs
    if modes.video_longer == "pad-silence" or audio_frames >= n_frames - 0.5:
        mode = "equal" if abs(audio_frames - n_frames) <= 0.5 else "pad-silence"
        total = n_frames
    else:
        mode, total = "trim", max(1, min(n_frames, math.ceil(audio_frames - 1e-6)))
    return total, mode, [FrameRun(out_start=0, out_end=total, src_start=0, step=1)]


def _choose_cuts(total: int, rate: Fraction, max_frames: int, pauses: list[Pause]) -> list[int]:
    """Frame boundaries to cut at: the middle of the longest pause in each window, else a hard cut."""
    cuts: list[int] = []
    start = 0
    while total - start > max_frames:
        window_end = start + max_frames
        min_cut = start + max(1, max_frames // 4)
        best: tuple[float, int] | None = None
        for lo in (min_cut, start + 1):
            for p in pauses:
                cut = round(Fraction(p.mid_s) * rate)
                if lo <= cut <= window_end and cut < total:
                    key = (p.length_s, cut)
                    if best is None or key > best:
                        best = key
            if best is not None:
                break
        cut = best[1] if best is not None else window_end
        cuts.append(cut)
        start = cut
    return cuts


def plan_from_samples(samples: "np.ndarray | Samples", video_frames: int, fps: float | Fraction, max_segment_s: float = 20.0,
                      length_mode: LengthModes | str | None = None, *, sr: int = MODEL_RATE, top_db: float = 40.0,
                      audio_name: str = "audio") -> SegmentPlan:
    """`plan_segments` on model-audio samples (16 kHz mono): an array, or `Samples` read from a file."""
    if not (0 < max_segment_s <= WHISPER_WINDOW_S):
        raise ValueError(f"max_segment_s must be in (0, {WHISPER_WINDOW_S:g}] s (Whisper's window), got {max_segment_s}")
    if video_frames < 1:
        raise InputError("video", "no frames", f"{video_frames} frames", "Provide a video that decodes.")
    modes = LengthModes.of(length_mode)
    rate = fps_fraction(fps)
    y = samples if isinstance(samples, Samples) else Samples.of_array(samples)
    n_audio = int(y.size)
    if n_audio == 0:
        raise InputError(audio_name, "no audio", "0 samples", "Provide a dub with speech.")
    audio_frames = float(Fraction(n_audio) * rate / sr)
    total, mode, runs = _timeline(video_frames, audio_frames, modes, audio_name, float(rate))
    total_samples = _sample_at(total, rate, sr)
    pad = max(0, total_samples - n_audio)
    trim = max(0, n_audio - total_samples)
    # the dub on the output timeline: cut to `total_samples`, silence-padded past its end
    timeline = Samples(total_samples, y._read)
    pauses = find_pauses(timeline, sr, top_db=top_db, available=n_audio)
    max_frames = max(1, math.floor(Fraction(max_segment_s).limit_denominator(1000) * rate + Fraction(1, 10**6)))
    cuts = _choose_cuts(total, rate, max_frames, pauses)
    bounds = [0, *cuts, total]
    segments = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        seg_runs = [r for r in (run.clip(a, b) for run in runs) if r is not None]
        segments.append(PlannedSegment(index=i, start_frame=a, end_frame=b, audio_start=_sample_at(a, rate, sr),
                                       audio_end=_sample_at(b, rate, sr), runs=seg_runs))
    return SegmentPlan(fps=float(rate), fps_num=rate.numerator, fps_den=rate.denominator, source_frames=video_frames,
                       audio_samples=n_audio, sample_rate=sr, total_frames=total, total_samples=total_samples,
                       length_mode=mode, audio_pad_s=pad / sr, audio_trim_s=trim / sr,
                       max_segment_s=max_segment_s, runs=runs, pauses=pauses, segments=segments)


def plan_segments(model_audio_path: str | Path, video_frames: int, fps: float | Fraction,
                  max_segment_s: float = 20.0, length_mode: LengthModes | str | None = None, *,
                  top_db: float = 40.0) -> SegmentPlan:
    """Plan frame-aligned segments ≤ `max_segment_s` cut at the dub's pauses (see module docs)."""
    path = Path(model_audio_path)
    with sf.SoundFile(os.fspath(path)) as handle:  # read piece by piece: memory does not grow with the dub
        if handle.samplerate != MODEL_RATE:
            raise InputError(str(path), "model audio rate", f"{handle.samplerate} Hz",
                             "Pass the 16 kHz model audio from normalize.")
        return plan_from_samples(Samples.of_file(handle), video_frames, fps, max_segment_s, length_mode,
                                 sr=MODEL_RATE, top_db=top_db, audio_name=str(path))


# ------------------------------------------------------------------------------------------------ cutting


def _encode_segment(reader: FrameReader, runs: list[FrameRun], rate: Fraction, out: Path, width: int,
                    height: int) -> int:
    chunk = reverse_chunk(width, height)
    with av.open(os.fspath(out), "w", format="mp4") as oc:
        st = oc.add_stream("libx264", rate=rate, options=dict(SEGMENT_X264))
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        tb = Fraction(1) / rate  # the encoder's time base (the stream's changes once the muxer writes its header)
        st.codec_context.time_base = tb
        n = 0
        for run in runs:
            for frame in run_frames(reader, run, chunk):
                if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
                    frame = frame.reformat(width=width, height=height, format="yuv420p")
                frame.pts = n
                frame.time_base = tb
                frame.pict_type = av.video.frame.PictureType.NONE
                for packet in st.encode(frame):
                    oc.mux(packet)
                n += 1
        for packet in st.encode(None):
            oc.mux(packet)
    return n


def _write_audio(samples_path: Path, start: int, stop: int, out: Path) -> None:
    with sf.SoundFile(os.fspath(samples_path)) as f:
        n = f.frames
        data = np.zeros((stop - start,), dtype=np.int16)
        if start < n:
            f.seek(start)
            got = f.read(min(stop, n) - start, dtype="int16", always_2d=True)
            data[: got.shape[0]] = got.mean(axis=1).astype(np.int16) if got.shape[1] > 1 else got[:, 0]
    sf.write(os.fspath(out), data, MODEL_RATE, subtype="PCM_16")


def cut_segments(plan: SegmentPlan, normalized_video_uri: str, model_audio_uri: str, out_dir: Path, *,
                 write_video: bool = True) -> list[Segment]:
    """Each planned segment's ``seg-NNNNN.wav`` (16 kHz mono slice) and its frames: a frame range of the normalized
    video when the plan shows the source frames in order, else ``seg-NNNNN.mp4`` (exact frame count).

    ``write_video=False`` (an engine that returns its input frames untouched, i.e. the passthrough dry run): no
    segment video is encoded for a plan that synthesizes frames (ping-pong, loop, freeze); each segment names the
    normalized video, and the final encode reads its frames in the plan's order (`tasks.post`, ``main_runs``)."""
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    video = local_path(normalized_video_uri, out_dir).absolute()
    audio = local_path(model_audio_uri, out_dir).absolute()
    rate = plan.rate
    segments: list[Segment] = []
    if plan.is_forward:  # the planned frames are the source frames in order: segments are ranges of the video
        for seg in plan.segments:
            wav = out_dir / f"seg-{seg.index:05d}.wav"
            _write_audio(audio, seg.audio_start, seg.audio_end, wav)
            segments.append(Segment(index=seg.index, start_frame=seg.start_frame, end_frame=seg.end_frame,
                                    fps=plan.fps, video_uri=str(normalized_video_uri), audio_uri=str(wav),
                                    frame_range=(seg.start_frame, seg.end_frame)))
        return segments
    if not write_video:  # frames in the plan's order are produced by the final encode, not here
        for seg in plan.segments:
            wav = out_dir / f"seg-{seg.index:05d}.wav"
            _write_audio(audio, seg.audio_start, seg.audio_end, wav)
            segments.append(Segment(index=seg.index, start_frame=seg.start_frame, end_frame=seg.end_frame,
                                    fps=plan.fps, video_uri=str(normalized_video_uri), audio_uri=str(wav)))
        return segments
    reader = FrameReader(video, rate, plan.source_frames)
    try:
        width = reader.stream.codec_context.width
        height = reader.stream.codec_context.height
        for seg in plan.segments:
            mp4 = out_dir / f"seg-{seg.index:05d}.mp4"
            wav = out_dir / f"seg-{seg.index:05d}.wav"
            try:
                written = _encode_segment(reader, seg.runs, rate, mp4, width, height)
            except av.error.FFmpegError as exc:
                raise MediaToolError(f"encoding segment {seg.index} of {video.name} failed: {exc}") from exc
            if written != seg.frame_count:
                raise MediaToolError(f"segment {seg.index}: wrote {written} frames, planned {seg.frame_count}")
            _write_audio(audio, seg.audio_start, seg.audio_end, wav)
            segments.append(Segment(index=seg.index, start_frame=seg.start_frame, end_frame=seg.end_frame,
                                    fps=plan.fps, video_uri=str(mp4), audio_uri=str(wav)))
    finally:
        reader.close()
    return segments


# ------------------------------------------------------------------------------------------------ tasks


@task(name="plan-segments", description="Cut points at the dub's pauses, frame-aligned, length mismatch resolved")
def plan_segments_task(model_audio_path: str, video_frames: int, fps: float, max_segment_s: float = 20.0,
                       length_mode: LengthModes | str | None = None) -> SegmentPlan:
    return plan_segments(model_audio_path, video_frames, fps, max_segment_s, length_mode)


@task(name="cut-segments", description="Segment videos (streamed, exact frame counts) + 16 kHz audio slices")
def cut_segments_task(plan: SegmentPlan, normalized_video_uri: str, model_audio_uri: str,
                      out_dir: Path, write_video: bool = True) -> list[Segment]:
    return cut_segments(plan, normalized_video_uri, model_audio_uri, out_dir, write_video=write_video)
