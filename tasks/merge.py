"""Stage 6a, merge: frame-accurate concatenation of the lip-synced segments, without re-encoding.

The segments all come out of one engine with the same codec, encoder parameters, size and frame rate, so the
ffmpeg concat *demuxer* with stream copy joins them losslessly and in seconds. The one and only lossy encode of
the job happens afterwards, in `tasks/post.py`.

Frame accuracy: the concat demuxer places file k+1 at "start of file k + duration of file k", and by default that
duration is the container's, i.e. the longest stream (an AAC track with priming samples, a few ms longer than the
video, would open a gap and make the final encode duplicate a frame at every join). The list file therefore gives
each segment an explicit `duration` = its video frames / fps, measured by demuxing (no decode), and only the video
stream is kept: the delivery audio is added by the final encode. The result is checked: merged frames == sum of
segment frames, else `MediaToolError`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from prefect import task
from prefect.cache_policies import NO_CACHE

from lipline.errors import MediaToolError
from lipline.media import run_ffmpeg
from lipline.tasks.probe import exact_frame_rate, rate_tolerance
from lipline.uris import local_path


@dataclass(frozen=True)
class VideoStreamStats:
    """What demuxing (not decoding) the first video stream says: cheap even for long 1080p files."""

    frames: int
    duration: Fraction          # seconds, from the packet timestamps (first pts to last pts + last duration)
    fps: Fraction               # the exact rate (`tasks.probe.exact_frame_rate`): declared/standard, confirmed
    width: int
    height: int
    has_audio: bool
    start: Fraction = Fraction(0)


def video_stream_stats(path: Path) -> VideoStreamStats:
    """Count the video packets of `path` and measure their time span (one packet = one frame for H.264 et al.)."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise MediaToolError(f"{path}: no video stream")
            stream = container.streams.video[0]
            has_audio = bool(container.streams.audio)
            tb = stream.time_base
            frames = 0
            first: int | None = None
            last_end: int | None = None
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:  # flush packets carry no frame
                    continue
                frames += 1
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last_end = end if last_end is None else max(last_end, end)
            if first is None or last_end is None or tb is None:
                duration = Fraction(0)
                start = Fraction(0)
            else:
                duration = Fraction(last_end - first) * Fraction(tb)
                start = Fraction(first) * Fraction(tb)
            # the exact rate (25, 30/1, 30000/1001, ...): a declared or standard rate the timestamps confirm
            measured = frames / duration if frames and duration else None
            fps = exact_frame_rate(measured, (stream.codec_context.framerate, stream.average_rate,
                                              stream.guessed_rate, stream.base_rate),
                                   tolerance=rate_tolerance(tb, float(duration))) or Fraction(0)
            if fps and frames and abs(duration - frames / fps) > Fraction(1, 2) / fps:
                # packet durations missing or odd: trust the frame count at the declared rate
                duration = frames / fps
            return VideoStreamStats(frames=frames, duration=duration, fps=fps,
                                    width=stream.codec_context.width, height=stream.codec_context.height,
                                    has_audio=has_audio, start=start)
    except av.error.FFmpegError as exc:
        raise MediaToolError(f"cannot read {path}: {exc}") from exc


def concat_quote(path: Path | str) -> bytes:
    """Quote a path for a `file` line of an ffconcat list (the demuxer's av_get_token rules).

    Inside single quotes everything is literal except the quote itself, which becomes ``'\\''`` (close, escaped
    quote, reopen). Works on bytes so names that are not valid UTF-8 survive unchanged.
    """
    raw = os.fsencode(path)
    if b"\n" in raw or b"\r" in raw:
        raise ValueError("concat list entries cannot contain line breaks")
    return b"'" + raw.replace(b"'", b"'\\''") + b"'"


def _safe_entry(path: Path, workdir: Path, index: int) -> Path:
    """The path to list: itself, or a plain-named symlink when the name has line breaks (the list is line-based)."""
    raw = os.fsencode(path)
    if b"\n" not in raw and b"\r" not in raw:
        return path
    link = workdir / f"segment-{index:05d}{path.suffix if path.suffix.isascii() else ''}"
    try:
        os.symlink(path, link)
    except OSError:
        import shutil

        shutil.copyfile(path, link)
    return link


def merge_segments(segment_uris: list[str], out_path: Path, *, workdir: Path | None = None) -> str:
    """Concatenate the segment videos into `out_path` (MP4) by stream copy and return its path.

    One segment is used as it is (its URI is returned, nothing is copied). Segments must share codec, encoder
    parameters, size and frame rate (they all come from one engine run); a mismatch in size or rate is an error.
    Only the video is kept. Raises `MediaToolError` when ffmpeg fails or the merged frame count is not the sum.
    """
    if not segment_uris:
        raise ValueError("merge_segments needs at least one segment")
    if len(segment_uris) == 1:
        return str(segment_uris[0])
    out_path = Path(out_path).absolute()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lipline-merge-", dir=workdir) as tmp:
        tmpdir = Path(tmp)
        paths = [local_path(uri, workdir or tmpdir).absolute() for uri in segment_uris]
        stats = [video_stream_stats(p) for p in paths]
        first = stats[0]
        for uri, s in zip(segment_uris, stats):
            if (s.width, s.height) != (first.width, first.height) or s.fps != first.fps:
                raise MediaToolError(
                    f"segment {uri} is {s.width}x{s.height} at {float(s.fps):.3f} fps, the first segment "
                    f"{first.width}x{first.height} at {float(first.fps):.3f} fps: segments must share size and rate")
            if s.frames == 0:
                raise MediaToolError(f"segment {uri} has no video frames")
        lines = [b"ffconcat version 1.0"]
        for i, (p, s) in enumerate(zip(paths, stats)):
            entry = _safe_entry(p, tmpdir, i)
            duration = s.frames / s.fps if s.fps else s.duration
            lines.append(b"file " + concat_quote(entry))
            lines.append(b"duration " + f"{float(duration):.6f}".encode())
        listing = tmpdir / "segments.ffconcat"
        listing.write_bytes(b"\n".join(lines) + b"\n")
        partial = out_path.with_name(out_path.name + ".part.mp4")
        try:
            run_ffmpeg(["-f", "concat", "-safe", "0", "-i", listing,
                        "-map", "0:v:0", "-c", "copy", "-an", "-sn", "-dn",
                        "-avoid_negative_ts", "make_zero",
                        "-movflags", "+faststart", "-f", "mp4", partial],
                       what=f"merging {len(paths)} segments")
            merged = video_stream_stats(partial)
            expected = sum(s.frames for s in stats)
            if merged.frames != expected:
                raise MediaToolError(f"merge lost frames: {merged.frames} merged, {expected} in the segments")
            os.replace(partial, out_path)
        finally:
            if partial.exists():
                partial.unlink()
    return str(out_path)


@task(name="merge", cache_policy=NO_CACHE,
      description="Frame-accurate stream-copy concat of the lip-synced segments")
def merge(segment_uris: list[str], out_path: Path) -> str:
    return merge_segments(segment_uris, out_path)


@task(name="merge-results", cache_policy=NO_CACHE,
      description="The main picture from the engine results: the source video as it is, or the segments joined")
def merge_results_task(results: list, out_path: Path) -> str:
    return merge_results(results, out_path)


def merge_results(results: list, out_path: Path) -> str:
    """The main picture from the engines' results, in segment order: frame ranges of one file that follow each other
    from frame 0 are that file as it is (nothing copied); segment files are joined with `merge_segments`."""
    results = sorted(results, key=lambda r: r.segment_index)
    ranges = [r.frame_range for r in results]
    if all(rng is not None for rng in ranges):
        if len({r.uri for r in results}) != 1 or ranges[0][0] != 0 or any(
                a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
            raise MediaToolError("engine results are frame ranges that do not follow each other in one file; "
                                 "cannot join them without re-encoding")
        return results[0].uri
    if any(rng is not None for rng in ranges):
        raise MediaToolError("some engine results are frame ranges and others files; an engine must return one kind")
    return merge_segments([r.uri for r in results], out_path)
