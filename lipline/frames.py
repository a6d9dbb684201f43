"""Frames of a video by index at a constant rate (PyAV), decoding forward and seeking only on jumps.

Used by the segment stage (cutting, reversed runs) and by video engines reading a frame range of the normalized
video. Holds at most the last decoded frame: memory does not grow with the video.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol

import av

from lipline.errors import MediaToolError


class FrameReader:
    """Frames of a video by index at `rate`, decoding forward and seeking only on jumps; holds no frames itself
    besides the one it shows.

    Index i shows the frame on screen at ``t0 + i / rate``: the last frame whose timestamp rounds to slot i or
    before (``round((t - t0) * rate)``), as ffmpeg's ``fps`` filter resamples. For a CFR file at `rate` that is
    frame i itself; a variable-rate file (a phone's or a screen recording, kept as it is for the final encode) is
    resampled: a gap holds the frame before it, and of frames sharing one slot the last is shown."""

    def __init__(self, path: Path, rate: Fraction, n_frames: int) -> None:
        self.container = av.open(os.fspath(path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rate = rate
        self.n_frames = n_frames
        self.tb = Fraction(self.stream.time_base)
        first = next(self.container.decode(self.stream), None)
        if first is None:
            self.container.close()
            raise MediaToolError(f"{path}: no video frame decodes")
        self.t0 = Fraction(first.pts) * self.tb if first.pts is not None else Fraction(0)
        self.max_skip = 2 * int(rate) + 2  # decode forward rather than seek for short jumps
        self._it: Iterator | None = None
        self._cursor = 0  # the next index `frames` can serve without seeking
        self._shown = None  # the frame index `_cursor - 1` shows
        self._peek: tuple | None = None  # (frame, slot): decoded, due at a later index
        self._ended = False
        self._seek(0)

    def close(self) -> None:
        self.container.close()

    def _seek(self, index: int) -> None:
        target = self.t0 + Fraction(index) / self.rate
        pts = math.floor((target - Fraction(1, 2) / self.rate) / self.tb)
        self.container.seek(max(pts, int(self.t0 / self.tb)), stream=self.stream, backward=True, any_frame=False)
        self._it = self.container.decode(self.stream)
        self._cursor = index
        self._shown = None
        self._peek = None
        self._ended = False

    def _slot(self, frame, fallback: int) -> int:
        if frame.pts is None:
            return fallback
        return round((Fraction(frame.pts) * self.tb - self.t0) * self.rate)

    def _advance_to(self, want: int) -> None:
        """Take in every frame due at `want` or before; the last one becomes the frame shown."""
        while not self._ended:
            if self._peek is None:
                try:
                    frame = next(self._it)
                except StopIteration:
                    self._ended = True  # the file ended: the last frame stays on screen
                    break
                self._peek = (frame, self._slot(frame, want))
            frame, slot = self._peek
            if slot > want:
                break
            self._shown, self._peek = frame, None

    def frames(self, start: int, stop: int) -> Iterator:
        """Yield exactly stop - start frames for indices start..stop-1 (repeats the last if the file ends)."""
        again = start == self._cursor - 1 and self._shown is not None  # the frame shown last, once more
        if not again and (start < self._cursor or start - self._cursor > self.max_skip):
            self._seek(start)
        for want in range(start, stop):
            self._advance_to(want)
            if self._shown is None:  # nothing due yet (a seek landed after the target): the next frame decoded
                if self._peek is None:
                    raise MediaToolError(f"no video frame decodes at index {want}")
                self._shown, self._peek = self._peek[0], None
            self._cursor = want + 1
            yield self._shown


REVERSE_BUDGET_BYTES = 192 << 20  # raw frames held at once while reversing a run (15 frames at 4K; the job ≤ 2 GB)
SPILL_BUDGET_BYTES = 8 << 30  # a reversed run up to this size goes through a temp file (decoded once) instead


class Run(Protocol):
    """A run of output frames showing source frames src_start, src_start+step, ... (`tasks.segment.FrameRun`)."""

    src_start: int
    step: int

    @property
    def length(self) -> int: ...


def run_frames(reader: FrameReader, run: Run, chunk: int) -> Iterator:
    """The frames of one run: forward, one frame held (step 0), or backwards in chunks of at most `chunk` frames."""
    if run.step == 1:
        yield from reader.frames(run.src_start, run.src_start + run.length)
    elif run.step == 0:
        frame = next(reader.frames(run.src_start, run.src_start + 1))
        for _ in range(run.length):
            yield frame
    else:  # backwards, in bounded chunks
        hi = run.src_start + 1
        lo_end = run.src_start - run.length + 1
        while hi > lo_end:
            lo = max(lo_end, hi - chunk)
            held = list(reader.frames(lo, hi))
            yield from reversed(held)
            del held
            hi = lo


def reverse_chunk(width: int, height: int) -> int:
    """Frames of a reversed run decoded and held at once (bounded by `REVERSE_BUDGET_BYTES` of raw yuv420p)."""
    return max(8, REVERSE_BUDGET_BYTES // max(1, width * height * 3 // 2))


def release_free_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc ``malloc_trim``; a no-op elsewhere): the earlier
    stages' buffers are gone but glibc keeps their arenas, which would count against the final encode's peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def write_yuv420p(frame, out: BinaryIO) -> None:
    """Write a yuv420p frame as raw bytes (Y, then U, then V, rows without padding): straight from the decoder's
    planes when their rows have no padding, else through one packed copy."""
    planes = frame.planes
    if all(p.line_size == p.width for p in planes):
        for p in planes:
            out.write(memoryview(p)[: p.line_size * p.height])
    else:
        out.write(frame.to_ndarray().data)


def _as_yuv420p(frame, width: int, height: int):
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, format="yuv420p")
    return frame


def spill_fits(spill_dir: Path | None, nbytes: int) -> bool:
    """Whether a reversed run of `nbytes` raw frames may go through a file in `spill_dir` (within
    `SPILL_BUDGET_BYTES` and half the free space there)."""
    if spill_dir is None or nbytes > SPILL_BUDGET_BYTES:
        return False
    try:
        return shutil.disk_usage(spill_dir).free >= 2 * nbytes
    except OSError:
        return False


def reversed_through_file(reader: FrameReader, run: Run, width: int, height: int, spill_dir: Path,
                          out: BinaryIO) -> int:
    """Write a backwards run to `out`: its frames decoded forward once into a raw file in `spill_dir`, then read
    back last to first (one frame in memory). Chunked decoding (`run_frames`) decodes from the keyframe before each
    chunk again: with keyframes far apart (a 5 s 4K clip with one) that is several times the frames."""
    lo = run.src_start - run.length + 1
    with tempfile.TemporaryFile(dir=spill_dir, prefix="lipline-reversed-") as spill:
        n = 0
        for frame in reader.frames(lo, run.src_start + 1):
            write_yuv420p(_as_yuv420p(frame, width, height), spill)
            n += 1
        return _read_back_reversed(spill, n, width * height * 3 // 2, out)


def forward_then_reversed(reader: FrameReader, forward: Run, backward: Run, width: int, height: int,
                          spill_dir: Path, out: BinaryIO) -> int:
    """A forward run followed by a backwards run over frames it shows (ping-pong): the forward run's frames go to
    `out` and, those the backwards run needs, to a raw file in `spill_dir` too, read back last to first; every
    source frame is decoded once instead of twice."""
    lo, hi = backward.src_start - backward.length + 1, backward.src_start
    with tempfile.TemporaryFile(dir=spill_dir, prefix="lipline-reversed-") as spill:
        n = kept = 0
        for index, frame in enumerate(reader.frames(forward.src_start, forward.src_start + forward.length),
                                      start=forward.src_start):
            frame = _as_yuv420p(frame, width, height)
            write_yuv420p(frame, out)
            n += 1
            if lo <= index <= hi:
                write_yuv420p(frame, spill)
                kept += 1
        return n + _read_back_reversed(spill, kept, width * height * 3 // 2, out)


def _read_back_reversed(spill: BinaryIO, n: int, frame_bytes: int, out: BinaryIO) -> int:
    """Write the `n` raw frames of `spill` to `out` last to first (one frame in memory)."""
    spill.flush()
    fd = spill.fileno()
    for i in range(n - 1, -1, -1):
        data = os.pread(fd, frame_bytes, i * frame_bytes)
        if len(data) != frame_bytes:
            raise MediaToolError(f"reversed run: frame {i} of {n} could not be read back from its spill file")
        out.write(data)
    return n


def _covers(forward: Run, backward: Run) -> bool:
    """Whether a forward run shows every source frame of a backwards run."""
    return (forward.step == 1 and backward.step < 0 and forward.src_start <= backward.src_start - backward.length + 1
            and backward.src_start < forward.src_start + forward.length)


def pipe_frames_in_order(path: Path, rate: Fraction, n_source: int, runs: Iterable[Run], out: BinaryIO,
                         spill_dir: Path | None = None) -> int:
    """Decode `path` in the order `runs` show its frames and write them as raw yuv420p to `out` (the stdin of the
    one final encode); returns the frames written. A backwards run goes through a raw file in `spill_dir` when it
    fits (`spill_fits`): filled by the forward run before it when that run shows its frames (ping-pong: each frame
    decoded once), else decoded forward once; over the budget it is decoded in chunks held in memory
    (`reverse_chunk`)."""
    runs = list(runs)
    reader = FrameReader(path, rate, n_source)
    try:
        width, height = reader.stream.codec_context.width, reader.stream.codec_context.height
        chunk = reverse_chunk(width, height)

        def spilled(run: Run) -> bool:
            return run.step < 0 and run.length > chunk and spill_fits(spill_dir, run.length * width * height * 3 // 2)

        n, i = 0, 0
        while i < len(runs):
            run, after = runs[i], runs[i + 1] if i + 1 < len(runs) else None
            if after is not None and _covers(run, after) and spilled(after):
                n += forward_then_reversed(reader, run, after, width, height, spill_dir, out)
                i += 2
                continue
            i += 1
            if spilled(run):
                n += reversed_through_file(reader, run, width, height, spill_dir, out)
                continue
            for frame in run_frames(reader, run, chunk):
                write_yuv420p(_as_yuv420p(frame, width, height), out)
                n += 1
        return n
    finally:
        reader.close()


SEGMENT_CODEC_OPTIONS = {"qp": "0", "preset": "ultrafast"}  # lossless: the job's one lossy encode is the final one


class LosslessWriter:
    """Writes yuv420p frames losslessly (H.264 qp 0) at an exact rate; pts = frame number."""

    def __init__(self, path: Path, rate: Fraction, width: int, height: int) -> None:
        self.container = av.open(os.fspath(path), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=rate, options=dict(SEGMENT_CODEC_OPTIONS))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.tb = Fraction(1) / rate
        self.stream.codec_context.time_base = self.tb
        self.count = 0

    def write(self, frame: av.VideoFrame) -> None:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = self.count
        frame.time_base = self.tb
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def video_facts(video: Path, count_frames: bool) -> tuple[int | None, Fraction, int, int]:
    """(frames, exact rate, width, height) of the first video stream; frames are counted by demuxing, and only
    when asked (a frame-range segment knows its frames: the whole normalized video is not read for each one)."""
    try:
        with av.open(os.fspath(video)) as container:
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or stream.guessed_rate).limit_denominator(1001)
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = sum(1 for p in container.demux(stream) if p.size and p.pts is not None) if count_frames else None
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaToolError(f"{video}: not a readable video ({exc})") from exc
    return frames, rate, width, height


__all__ = ["FrameReader", "LosslessWriter", "REVERSE_BUDGET_BYTES", "SEGMENT_CODEC_OPTIONS", "pipe_frames_in_order",
           "release_free_memory", "reverse_chunk", "run_frames", "video_facts"]
