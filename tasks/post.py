"""Stage 6b, post-processing: the ONE final encode of the job.

A single ffmpeg run with one filter graph does everything after the lip-sync:

    intro ─ fps, scale+pad to the main size, setsar=1, yuv420p; its audio (or silence) at 48 kHz stereo ─┐
    main  ─ fps (source rate), burn-in subtitles (libass, bundled CJK font), yuv420p; the delivery audio ├ concat
    outro ─ like the intro ───────────────────────────────────────────────────────────────────────────────┘
      → libx264 (params.preset / params.crf, yuv420p, source frame rate) + AAC 48 kHz stereo
      (+ the shifted subtitles as a mov_text track), `-movflags +faststart`.

Every bumper is cut/padded to a whole number of frames at the main rate and its audio is padded/trimmed to exactly
that length, so the intro offset used to shift the soft subtitles and sidecars is exact (frames / fps).

Subtitle files can be SRT, ASS or WebVTT in any encoding: they are decoded (BOM, UTF-8, else charset-normalizer),
parsed with pysubs2 and re-written as UTF-8 under plain names in a private temp dir, so a user's file name never
reaches the filter graph; every path that does (temp dir, font dir) goes through `filter_path` escaping.
Memory stays bounded: frames only stream through ffmpeg.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import pysubs2
from prefect import task
from prefect.cache_policies import NO_CACHE

from lipline.errors import InputError, MediaToolError
from lipline.frames import Run, pipe_frames_in_order, release_free_memory
from lipline.media import FONT_FAMILY, ensure_font_dir, ffmpeg_exe, filter_path, filter_value
from lipline.progress import ProgressArtifact
from lipline.records import FinalOutputs, PostParams, rate_text
from lipline.tasks.merge import VideoStreamStats, video_stream_stats
from lipline.tasks.subtitle_files import decode_subtitle_bytes, parse_subtitles
from lipline.uris import local_path

SAMPLE_RATE = 48000
AUDIO_FORMAT = f"aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"

ProgressFn = Callable[[float], None]


# ---------------------------------------------------------------------------------------------------- subtitles

def load_subtitles(path: Path, label: str | None = None) -> pysubs2.SSAFile:
    """Parse an SRT / ASS / SSA / WebVTT file in any text encoding (format detected from the content)."""
    label = label or str(path)
    try:
        text, _encoding = decode_subtitle_bytes(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise InputError(label, "subtitles-encoding", f"cannot decode the text ({exc.reason})",
                         "Save the subtitles as UTF-8.") from exc
    try:
        subs = parse_subtitles(text)
    except Exception as exc:  # pysubs2 raises several types for unknown / broken formats
        raise InputError(label, "subtitles-format", f"not a readable SRT/ASS/VTT file ({exc})",
                         "Provide SRT, ASS or WebVTT subtitles.") from exc
    return subs


def _clip_to_window(subs: pysubs2.SSAFile, start_ms: int, end_ms: int) -> pysubs2.SSAFile:
    """Keep the cues overlapping [start_ms, end_ms), clipped to it (soft subtitles stay inside the main part)."""
    out = copy.deepcopy(subs)
    kept = []
    for ev in out.events:
        if ev.is_comment or ev.end <= start_ms or ev.start >= end_ms:
            continue
        ev.start, ev.end = max(ev.start, start_ms), min(ev.end, end_ms)
        kept.append(ev)
    out.events = kept
    return out


def _write_subtitle(subs: pysubs2.SSAFile, path: Path, fmt: str) -> Path:
    subs.save(os.fspath(path), encoding="utf-8", format_=fmt)
    return path


# ------------------------------------------------------------------------------------------------ filter graph

def _frames_at(stats: VideoStreamStats, rate: Fraction) -> int:
    """Whole frames a bumper lasts once resampled to `rate`."""
    return max(1, round(stats.duration * rate))


def _seconds(value: Fraction) -> str:
    return f"{float(value):.6f}"


# A display rotation (degrees clockwise, `VideoInfo.rotation`) as the filters that turn the picture upright: what
# ffmpeg's autorotate inserts for a file with that display matrix.
ROTATE_FILTERS: dict[int, tuple[str, ...]] = {90: ("transpose=clock",), 180: ("hflip", "vflip"),
                                              270: ("transpose=cclock",)}


def _bumper_chains(idx: int, label: str, stats: VideoStreamStats, frames: int, rate: Fraction,
                   width: int, height: int) -> list[str]:
    duration = _seconds(frames / rate)
    video = (f"[{idx}:v:0]setpts=PTS-STARTPTS,fps={rate},"
             f"scale={width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2,"
             f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1,format=yuv420p,"
             f"tpad=stop_mode=clone:stop_duration=2,trim=end_frame={frames},setpts=PTS-STARTPTS[{label}v]")
    if stats.has_audio:
        audio = (f"[{idx}:a:0]asetpts=PTS-STARTPTS,aresample={SAMPLE_RATE},{AUDIO_FORMAT},"
                 f"apad,atrim=end={duration},asetpts=PTS-STARTPTS[{label}a]")
    else:  # a silent bumper still needs an audio segment for concat: exact-length silence
        audio = (f"anullsrc=r={SAMPLE_RATE}:cl=stereo,atrim=end={duration},{AUDIO_FORMAT},"
                 f"asetpts=PTS-STARTPTS[{label}a]")
    return [video, audio]


def build_filtergraph(*, rate: Fraction, width: int, height: int, main_frames: int,
                      burn_file: Path | None, font_dir: Path | None,
                      bumpers: list[tuple[int, str, VideoStreamStats, int]], order: list[str],
                      main_rotation: int = 0) -> str:
    """The filter_complex text. Inputs: 0 = main video, 1 = delivery audio, bumpers at their indices.
    `main_rotation`: degrees clockwise to turn the main input's frames (raw frames piped in their coded orientation;
    a file input is turned by ffmpeg itself, from its display matrix)."""
    main_dur = _seconds(main_frames / rate)
    vf = ["[0:v:0]setpts=PTS-STARTPTS", *ROTATE_FILTERS.get(main_rotation % 360, ()), f"fps={rate}"]
    if burn_file is not None:
        sub = f"subtitles=filename={filter_path(burn_file)}"
        if font_dir is not None:
            sub += f":fontsdir={filter_path(font_dir)}"
        sub += f":force_style={filter_value('FontName=' + FONT_FAMILY)}"
        vf.append(sub)
    vf += ["setsar=1", "format=yuv420p", f"trim=end_frame={main_frames}", "setpts=PTS-STARTPTS[mainv]"]
    chains = [",".join(vf),
              f"[1:a:0]asetpts=PTS-STARTPTS,aresample={SAMPLE_RATE},{AUDIO_FORMAT},"
              f"apad,atrim=end={main_dur},asetpts=PTS-STARTPTS[maina]"]
    for idx, label, stats, frames in bumpers:
        chains += _bumper_chains(idx, label, stats, frames, rate, width, height)
    if len(order) == 1:
        chains.append("[mainv]null[vout]")
        chains.append("[maina]anull[aout]")
    else:
        pads = "".join(f"[{name}v][{name}a]" for name in order)
        chains.append(f"{pads}concat=n={len(order)}:v=1:a=1[vout][aout]")
    return ";".join(chains)


# ------------------------------------------------------------------------------------------------------ ffmpeg

def widen_pipe(pipe, size: int = 1 << 20) -> None:
    """Linux: a 1 MB pipe instead of 64 KB (F_SETPIPE_SZ; capped by /proc/sys/fs/pipe-max-size): a raw 4K frame
    crosses in 12 writes instead of 190, each a wake-up of the encoder. Elsewhere, or when refused, nothing."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ImportError, AttributeError, ValueError):
        pass


def _feed_stdin(proc: subprocess.Popen, feed: Callable[[BinaryIO], object], failed: list[BaseException]) -> None:
    """Write ffmpeg's stdin with `feed` and close it (a thread); an error is kept for the caller."""
    assert proc.stdin is not None
    try:
        feed(proc.stdin)
    except BrokenPipeError:  # ffmpeg stopped reading: its exit status and stderr say why
        pass
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after ffmpeg is stopped
        failed.append(exc)
        proc.kill()
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()


def run_ffmpeg_with_progress(args: list[str | os.PathLike], *, what: str, expected_s: float,
                             progress: ProgressFn | None = None, workdir: Path,
                             feed: Callable[[BinaryIO], object] | None = None) -> None:
    """Run ffmpeg (argument list), reading `-progress pipe:1` line by line while it runs.

    stderr goes to a file (a full stderr pipe that nobody reads would block ffmpeg). Reports fractions in [0, 1]
    to `progress` and 1.0 at the end; raises `MediaToolError` with the stderr tail on failure. `feed`, when given,
    writes ffmpeg's stdin (``-i pipe:0``) from a thread while the progress is read.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", *([] if feed else ["-nostdin"]), "-y", "-loglevel", "error", "-nostats",
           "-progress", "pipe:1", *[os.fspath(a) for a in args]]
    err_path = workdir / "ffmpeg-stderr.log"
    last = -1.0
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if feed else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err)
        if feed is not None:
            widen_pipe(proc.stdin)
        failed: list[BaseException] = []
        feeder = threading.Thread(target=_feed_stdin, args=(proc, feed, failed), name="ffmpeg-stdin", daemon=True)
        if feed is not None:
            feeder.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                key, _, value = raw.decode("ascii", "replace").strip().partition("=")
                if key == "out_time_us" and progress is not None and expected_s > 0:
                    try:
                        fraction = min(1.0, max(0.0, int(value) / 1e6 / expected_s))
                    except ValueError:  # "N/A" before the first frame
                        continue
                    if fraction - last >= 0.01:
                        last = fraction
                        progress(fraction)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if feeder.is_alive():
                feeder.join()
    if failed:
        raise failed[0]
    if code != 0:
        tail = err_path.read_bytes().decode("utf-8", "replace").strip().splitlines()[-6:]
        raise MediaToolError(f"ffmpeg failed while {what} (exit {code}): " + " | ".join(tail))
    if progress is not None and last < 1.0:
        progress(1.0)


# ------------------------------------------------------------------------------------------------------ stage

def _forced_keyframes(times: Sequence[float], offset: Fraction, rate: Fraction) -> list[str]:
    """``-force_key_frames`` for main-part `times`: the first frame at or after each, a quarter frame early so that
    rounding never moves it to the next frame."""
    if not times:
        return []
    quarter = 0.25 / float(rate)
    return ["-force_key_frames", ",".join(f"{max(0.0, float(offset) + t - quarter):.6f}" for t in sorted(times))]


def _check_runs(runs: Sequence[Run], source_frames: int, uri: str) -> int:
    """Frames the runs show; every source frame they name must exist in the main video."""
    for run in runs:
        last = run.src_start + run.step * (run.length - 1)
        if run.length < 1 or min(run.src_start, last) < 0 or max(run.src_start, last) >= source_frames:
            raise MediaToolError(f"{uri} has {source_frames} frames; the plan shows frames {run.src_start}..{last}")
    return sum(run.length for run in runs)


def finalize(main_video_uri: str, delivery_audio_uri: str, out_dir: Path, params: PostParams,
             subtitles_uri: str | None = None, intro_uri: str | None = None, outro_uri: str | None = None,
             *, progress: ProgressFn | None = None, main_frame_limit: int | None = None,
             main_runs: Sequence[Run] | None = None, main_rate: Fraction | None = None,
             keyframes_at: Sequence[float] = (), main_rotation: int = 0,
             main_source_frames: int | None = None) -> FinalOutputs:
    """Write `out_dir/final.mp4` (+ `final.srt`, `final.vtt` when there are subtitles and soft subtitles are on).

    `main_video_uri`: the merged lip-synced video at the source frame rate (its audio, if any, is ignored).
    `delivery_audio_uri`: the loudness-normalized 48 kHz stereo track; padded with silence / trimmed to the main
    video's length. `main_frame_limit` uses only the first N frames of the main video (the plan's timeline when
    the main video is the untouched normalized source). `main_runs` (a plan that synthesizes frames: ping-pong,
    loop, freeze; `tasks.segment.FrameRun`): the main picture is the frames of `main_video_uri` in the order the runs
    show them, decoded once and piped into this encode (no intermediate encode). `main_rate`: the job's exact rate
    (the probe's), delivered instead of the one the main file's own timestamps give (a stream copy from a coarse
    time base, e.g. MKV's 1 ms, reads as 16000/667 where the source is 24000/1001). Intro and outro are conformed to
    the main clip; a bumper without audio gets silence. `keyframes_at`: times in the main part (seconds) whose
    frames become keyframes of the deliverable (the QC contact sheet's, decoded without the frames before them).
    `main_rotation`: the display rotation (degrees clockwise) the main video carries (a phone's portrait clip kept as
    it is, `NormalizedVideo.rotation`): the deliverable shows it upright. `main_source_frames` (with `main_runs`): a
    main video of variable frame rate kept as it is (`NormalizedVideo.variable_rate`) lasts this many frames at
    `main_rate`; the frame feed resamples it (`lipline.frames.FrameReader`).
    """
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    release_free_memory()  # the encoder's memory adds to this process's: start from what is really in use
    final = out_dir / "final.mp4"
    partial = out_dir / "final.mp4.part"
    # a private temp dir in the system temp folder: the only paths that appear inside the filter graph
    with tempfile.TemporaryDirectory(prefix="lipline-post-") as tmp:
        work = Path(tmp)
        main_path = local_path(main_video_uri, work)
        audio_path = local_path(delivery_audio_uri, work)
        main = video_stream_stats(main_path)
        if main_source_frames is not None:  # a variable-rate main: its frames at the job's rate, not its packets
            main = dataclasses.replace(main, frames=main_source_frames)
        if not (main_rate or main.fps) or main.frames == 0:
            raise MediaToolError(f"{main_video_uri}: no usable video frames / frame rate")
        if main_frame_limit is not None and main_frame_limit > main.frames:
            raise MediaToolError(f"{main_video_uri} has {main.frames} frames, the job's timeline {main_frame_limit}: "
                                 "a stage lost frames")
        if main_frame_limit is not None and main_frame_limit < main.frames:
            main = dataclasses.replace(main, frames=main_frame_limit)
        rate, width, height = Fraction(main_rate) if main_rate else main.fps, main.width, main.height
        if main_rotation % 180:  # the deliverable's size: the picture as shown
            width, height = height, width

        inputs: list[str | os.PathLike] = ["-i", main_path, "-i", audio_path]
        feed: Callable[[BinaryIO], None] | None = None
        if main_runs is not None:
            source_frames = main.frames
            main = dataclasses.replace(main, frames=_check_runs(main_runs, source_frames, main_video_uri))
            # a raw 4K frame is 12 MB: ffmpeg queues 4 of them from the pipe, not its default 8 per input
            inputs[:2] = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{main.width}x{main.height}",
                          "-framerate", rate_text(rate), "-thread_queue_size", "4", "-i", "pipe:0"]

            def feed_in_plan_order(stdin: BinaryIO) -> None:
                written = pipe_frames_in_order(main_path, rate, source_frames, main_runs, stdin, spill_dir=work)
                if written != main.frames:
                    raise MediaToolError(f"{main_video_uri}: {written} frames piped, the plan has {main.frames}")

            feed = feed_in_plan_order
        bumpers: list[tuple[int, str, VideoStreamStats, int]] = []
        order = ["main"]
        next_index = 2
        intro_frames = outro_frames = 0
        for label, uri in (("intro", intro_uri), ("outro", outro_uri)):
            if not uri:
                continue
            path = local_path(uri, work)
            stats = video_stream_stats(path)
            frames = _frames_at(stats, rate)
            bumpers.append((next_index, label, stats, frames))
            inputs += ["-i", path]
            next_index += 1
            if label == "intro":
                intro_frames = frames
                order.insert(0, "intro")
            else:
                outro_frames = frames
                order.append("outro")

        intro_offset = Fraction(intro_frames) / rate
        main_end = intro_offset + Fraction(main.frames) / rate
        total_frames = intro_frames + main.frames + outro_frames
        total_s = Fraction(total_frames) / rate

        burn_file: Path | None = None
        srt_out = vtt_out = None
        soft_input: list[str | os.PathLike] = []
        if subtitles_uri:
            subs = load_subtitles(local_path(subtitles_uri, work), label=str(subtitles_uri))
            if params.burn_subtitles and subs.events:
                keep_ass = subs.format in ("ass", "ssa")
                burn_file = _write_subtitle(subs, work / ("burn.ass" if keep_ass else "burn.srt"),
                                            "ass" if keep_ass else "srt")
            if params.soft_subtitles:
                shifted = copy.deepcopy(subs)
                shifted.shift(ms=round(intro_offset * 1000))
                shifted = _clip_to_window(shifted, round(intro_offset * 1000), round(main_end * 1000))
                srt_out = _write_subtitle(shifted, out_dir / "final.srt", "srt")
                vtt_out = _write_subtitle(shifted, out_dir / "final.vtt", "vtt")
                if shifted.events:
                    soft = _write_subtitle(shifted, work / "soft.srt", "srt")
                    soft_input = ["-f", "srt", "-i", soft]

        graph = build_filtergraph(rate=rate, width=width, height=height, main_frames=main.frames,
                                  burn_file=burn_file, font_dir=ensure_font_dir() if burn_file else None,
                                  bumpers=bumpers, order=order,
                                  main_rotation=main_rotation if main_runs is not None else 0)
        args: list[str | os.PathLike] = [*inputs, *soft_input, "-filter_complex", graph,
                                         "-map", "[vout]", "-map", "[aout]"]
        if soft_input:
            args += ["-map", f"{next_index}:s:0", "-c:s", "mov_text",
                     "-metadata:s:s:0", f"language={params.subtitle_language}"]
        args += ["-c:v", "libx264", "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
                 "-r", rate_text(rate), "-fps_mode", "cfr", *_forced_keyframes(keyframes_at, intro_offset, rate),
                 "-c:a", "aac", "-b:a", params.audio_bitrate, "-ar", str(SAMPLE_RATE), "-ac", "2",
                 "-movflags", "+faststart", "-f", "mp4", partial]
        try:
            run_ffmpeg_with_progress(args, what="encoding the deliverable", expected_s=float(total_s),
                                     progress=progress, workdir=work, feed=feed)
            encoded = video_stream_stats(partial)
            if (encoded.frames, encoded.fps) != (total_frames, rate):
                raise MediaToolError(f"the final encode wrote {encoded.frames} frames at {rate_text(encoded.fps)} fps, "
                                     f"expected {total_frames} at {rate_text(rate)}")
            os.replace(partial, final)
        finally:
            if partial.exists():
                partial.unlink()
    return FinalOutputs(video_path=str(final), srt_path=str(srt_out) if srt_out else None,
                        vtt_path=str(vtt_out) if vtt_out else None, intro_offset_s=float(intro_offset),
                        duration_s=float(total_s), fps=float(rate), rate=rate_text(rate), frame_count=total_frames)


@task(name="post", cache_policy=NO_CACHE,
      description="One final encode: subtitles, intro/outro, delivery audio, sidecars")
def post(main_video_uri: str, delivery_audio_uri: str, out_dir: Path, params: PostParams,
         subtitles_uri: str | None = None, intro_uri: str | None = None, outro_uri: str | None = None,
         progress: ProgressFn | None = None, main_frame_limit: int | None = None,
         main_runs: list | None = None, main_rate: Fraction | None = None,
         keyframes_at: list[float] | None = None, main_rotation: int = 0,
         main_source_frames: int | None = None) -> FinalOutputs:
    return finalize(main_video_uri, delivery_audio_uri, out_dir, params, subtitles_uri, intro_uri, outro_uri,
                    progress=progress or ProgressArtifact("final-encode", "Final encode"),
                    main_frame_limit=main_frame_limit, main_runs=main_runs, main_rate=main_rate,
                    keyframes_at=keyframes_at or (), main_rotation=main_rotation,
                    main_source_frames=main_source_frames)


__all__ = ["FinalOutputs", "PostParams", "decode_subtitle_bytes", "finalize", "load_subtitles", "post",
           "run_ffmpeg_with_progress"]
