"""Streaming audio measurements: every contract/normalize measurement of a whole file in constant memory.

`measure_file` decodes a file in chunks (PyAV) and feeds each chunk to small accumulators, one per measurement
(lhotse style). Results equal the whole-array functions in `lipline.tasks.loudness` (which call the same
accumulators, or pyloudnorm itself for integrated loudness): a 10-min 48 kHz stereo dub is measured in a few
tens of MB instead of gigabytes (pyloudnorm works on a float64 copy of the whole signal and its filtered copy).

Integrated loudness follows pyloudnorm's BS.1770-4 meter exactly: its K-weighting filters (applied with carried
filter state), 400 ms blocks every 100 ms with pyloudnorm's own block bounds, absolute gate −70 LUFS, relative
gate −10 LU, channel weights 1, 1, 1, 1.41, 1.41 (LFE dropped above five channels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LFE_INDEX = 3  # FL FR FC LFE BL BR (SMPTE / FFmpeg 5.1 order)
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
BLOCK_S, STEP = 0.4, 0.25  # pyloudnorm: T_g and 1 - overlap


def as_2d(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    return x[:, None] if x.ndim == 1 else x


def drop_lfe(samples: np.ndarray) -> np.ndarray:
    """Drop the LFE channel of a > 5 channel signal and keep at most 5 channels (what BS.1770 weights)."""
    x = as_2d(samples)
    if x.shape[1] > 5:
        x = np.delete(x, LFE_INDEX, axis=1)[:, :5]
    return x


class LoudnessMeter:
    """BS.1770 integrated loudness, chunk by chunk (bit-for-bit pyloudnorm's block layout)."""

    def __init__(self, sr: int, channels: int) -> None:
        import pyloudnorm
        from scipy.signal import lfilter_zi

        self.sr = sr
        self.filters = [(f.b, f.a, f.passband_gain) for f in pyloudnorm.Meter(sr)._filters.values()]
        self.channels = min(channels - (1 if channels > 5 else 0), 5)
        self.state = [[lfilter_zi(b, a) * 0.0 for _ in range(self.channels)] for b, a, _ in self.filters]
        self.sub_sums: list[np.ndarray] = []  # per 100 ms sub-block: sum of squares per channel
        self.pos = 0
        self.current = np.zeros(self.channels)

    def _bound(self, k: int) -> int:
        return int(BLOCK_S * (k * STEP) * self.sr)

    def add(self, chunk: np.ndarray) -> None:
        from scipy.signal import lfilter

        x = drop_lfe(chunk).astype(np.float64)
        for f, (b, a, gain) in enumerate(self.filters):
            for ch in range(self.channels):
                y, self.state[f][ch] = lfilter(b, a, x[:, ch], zi=self.state[f][ch])
                x[:, ch] = gain * y
        sq = x * x
        start, end = self.pos, self.pos + len(sq)
        while start < end:
            k = len(self.sub_sums)
            stop = min(end, self._bound(k + 1))
            self.current += sq[start - self.pos: stop - self.pos].sum(axis=0)
            start = stop
            if stop == self._bound(k + 1):
                self.sub_sums.append(self.current)
                self.current = np.zeros(self.channels)
        self.pos = end

    def result(self) -> float:
        """LUFS; ``-inf`` below the absolute gate (silence), ``nan`` when shorter than one 400 ms block."""
        if self.pos < int(BLOCK_S * self.sr) + 1:
            return float("nan")
        subs = np.array(self.sub_sums + [self.current])
        n_blocks = int(np.round((self.pos / self.sr - BLOCK_S) / (BLOCK_S * STEP))) + 1
        z = np.array([subs[j:j + 4].sum(axis=0) for j in range(n_blocks)]) / (BLOCK_S * self.sr)
        weights = np.array(CHANNEL_WEIGHTS[: self.channels])
        with np.errstate(divide="ignore", invalid="ignore"):
            blocks = -0.691 + 10.0 * np.log10(z @ weights)
            gated = blocks >= -70.0
            if not gated.any():
                return float("-inf")
            relative = -0.691 + 10.0 * np.log10(z[gated].mean(axis=0) @ weights) - 10.0
            keep = (blocks > relative) & (blocks > -70.0)
            value = -0.691 + 10.0 * np.log10(np.nan_to_num(z[keep].mean(axis=0)) @ weights)
        return float(value) if math.isfinite(value) and value >= -120 else float("-inf")


class TruePeak:
    """Peak of the 4x polyphase-upsampled signal (BS.1770 Annex 2), with context carried across chunks.

    Only the stretches that could raise the peak are upsampled: an upsampled sample is a weighted sum of the input
    samples within the interpolation filter's reach, so it is at most `gain_bound` times their largest magnitude.
    A block whose neighbourhood times that bound cannot beat the peak already found (at least the sample peak) is
    skipped — the result is the same as upsampling everything, value for value; speech spends most of its time
    well below its peak, so most of the signal is skipped (`tests/tasks/test_audio_stream.py`).
    """

    CONTEXT = 64  # input samples of context on each side of the region a pass is trusted for
    BLOCK = 2048  # input samples per block the skip decides on

    def __init__(self, oversample: int = 4) -> None:
        self.oversample = oversample
        self.tail: np.ndarray | None = None
        self.scanned = 0  # samples at the start of `tail` already scanned
        self.peak = 0.0
        self.taps, self.reach, self.gain_bound = _interpolator(oversample)

    def _upsampled_peak(self, x: np.ndarray, lo: int, hi: int) -> float:
        """max |4x upsampled x| over the input samples [lo, hi), computed on x[lo - CONTEXT, hi + CONTEXT)."""
        from scipy.signal import resample_poly

        start, stop = max(0, lo - self.CONTEXT), min(len(x), hi + self.CONTEXT)
        up = resample_poly(x[start:stop], self.oversample, 1, axis=0, window=self.taps)
        return float(np.abs(up[(lo - start) * self.oversample: (hi - start) * self.oversample]).max())

    def _scan(self, x: np.ndarray, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        level = np.abs(x).max(axis=1)  # per input sample, the loudest channel
        self.peak = max(self.peak, float(level[lo:hi].max()))
        blocks = -(-(hi - lo) // self.BLOCK)
        grid = np.zeros(blocks * self.BLOCK, level.dtype)
        grid[:hi - lo] = level[lo:hi]
        grid = grid.reshape(blocks, self.BLOCK)
        near = grid.max(axis=1)  # each block's loudest sample, then its neighbours' within the filter's reach
        before, after = level[max(0, lo - self.reach):lo], level[hi:hi + self.reach]
        near[0] = max(near[0], before.max(initial=0.0))
        near[-1] = max(near[-1], after.max(initial=0.0))
        near[1:] = np.maximum(near[1:], grid[:-1, -self.reach:].max(axis=1))
        near[:-1] = np.maximum(near[:-1], grid[1:, :self.reach].max(axis=1))
        could_raise = np.concatenate([[False], near * self.gain_bound > self.peak, [False]])
        edges = np.flatnonzero(np.diff(could_raise.astype(np.int8)))  # starts and ends of runs of blocks, paired
        for first, last in zip(edges[::2], edges[1::2]):
            self.peak = max(self.peak, self._upsampled_peak(x, lo + first * self.BLOCK,
                                                            min(hi, lo + last * self.BLOCK)))

    def add(self, chunk: np.ndarray) -> None:
        x = as_2d(chunk).astype(np.float64)
        buf = x if self.tail is None else np.concatenate([self.tail, x])
        done = max(self.scanned, len(buf) - self.CONTEXT)  # the last CONTEXT samples wait for what follows them
        self._scan(buf, self.scanned, done)
        keep = min(len(buf), 2 * self.CONTEXT)
        self.tail = buf[len(buf) - keep:]
        self.scanned = max(0, done - (len(buf) - keep))  # how much of the tail is already scanned

    def result(self) -> float:
        if self.tail is not None and len(self.tail):
            self._scan(self.tail, self.scanned, len(self.tail))
        return 20.0 * math.log10(self.peak) if self.peak > 0 else float("-inf")


@functools.lru_cache(maxsize=4)
def _interpolator(oversample: int) -> tuple[np.ndarray, int, float]:
    """The filter `scipy.signal.resample_poly` upsamples with by default (its own design, made once here instead of
    at every call: Kaiser-windowed sinc, 10 input samples each side); how many input samples on each side reach one
    output sample; and the largest sum of |taps| of any output phase — the most an output can exceed the inputs it
    is made of — with a margin for rounding."""
    from scipy.signal import firwin

    half_len = 10 * oversample
    taps = firwin(2 * half_len + 1, 1.0 / oversample, window=("kaiser", 5.0))
    gain = max(float(np.abs(taps[phase::oversample] * oversample).sum()) for phase in range(oversample))
    return taps, half_len // oversample + 2, gain * (1 + 1e-9)


class ClippingRuns:
    """Runs of at least `min_run` consecutive samples with |x| ≥ threshold, summed over channels."""

    def __init__(self, threshold: float = 0.999, min_run: int = 3) -> None:
        self.threshold, self.min_run = threshold, min_run
        self.open: np.ndarray | None = None  # length of the run still open at the end of the last chunk
        self.count = 0

    def add(self, chunk: np.ndarray) -> None:
        x = as_2d(chunk)
        if self.open is None:
            self.open = np.zeros(x.shape[1], dtype=np.int64)
        for ch in range(x.shape[1]):
            mask = np.abs(x[:, ch]) >= self.threshold
            edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            lengths = ends - starts
            if len(lengths) and starts[0] == 0:
                lengths[0] += self.open[ch]
            elif self.open[ch]:
                self.count += int(self.open[ch] >= self.min_run)
            if len(lengths) and ends[-1] == len(mask):
                self.open[ch] = lengths[-1]
                lengths = lengths[:-1]
            else:
                self.open[ch] = 0
            self.count += int(np.count_nonzero(lengths >= self.min_run))

    def result(self) -> int:
        return self.count + (int(np.count_nonzero(self.open >= self.min_run)) if self.open is not None else 0)


class PhaseCorrelation:
    """Normalised L/R correlation in −1..1 (−1: one channel inverted); ``nan`` for silence or mono."""

    def __init__(self) -> None:
        self.lr = self.ll = self.rr = 0.0
        self.stereo = False

    def add(self, chunk: np.ndarray) -> None:
        x = as_2d(chunk).astype(np.float64)
        if x.shape[1] < 2:
            return
        self.stereo = True
        left, right = x[:, 0], x[:, 1]
        self.lr += float(left @ right)
        self.ll += float(left @ left)
        self.rr += float(right @ right)

    def result(self) -> float:
        denom = math.sqrt(self.ll * self.rr)
        return self.lr / denom if self.stereo and denom > 1e-12 else float("nan")


class EdgeSilence:
    """Seconds of silence (10 ms windows below `threshold_db` dBFS RMS, loudest channel) at each end."""

    def __init__(self, sr: int, threshold_db: float = -50.0, window_s: float = 0.010) -> None:
        self.sr, self.win = sr, max(1, int(round(window_s * sr)))
        self.limit = 10 ** (threshold_db / 20.0)
        self.carry: np.ndarray | None = None
        self.windows = 0
        self.first_loud: int | None = None
        self.last_loud: int | None = None
        self.samples = 0

    def add(self, chunk: np.ndarray) -> None:
        x = as_2d(chunk).astype(np.float64)
        self.samples += len(x)
        buf = x if self.carry is None else np.concatenate([self.carry, x])
        n = len(buf) // self.win
        self.carry = buf[n * self.win:]
        if n == 0:
            return
        rms = np.sqrt(np.mean(buf[: n * self.win].reshape(n, self.win, -1) ** 2, axis=1)).max(axis=1)
        loud = np.flatnonzero(rms > self.limit)
        if loud.size:
            if self.first_loud is None:
                self.first_loud = self.windows + int(loud[0])
            self.last_loud = self.windows + int(loud[-1])
        self.windows += n

    def result(self) -> tuple[float, float]:
        duration = self.samples / self.sr
        if self.samples == 0:
            return 0.0, 0.0
        if self.first_loud is None:
            return duration, duration
        lead = self.first_loud * self.win / self.sr
        return float(lead), float(max(0.0, duration - (self.last_loud + 1) * self.win / self.sr))


def iter_audio(path: str | Path, chunk_s: float = 10.0, sr: int | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Decode the first audio stream of `path` in chunks of about `chunk_s` seconds: ``([n, ch] float32, rate)``.

    Raises ``ValueError`` when there is no audio stream; stops quietly at a decode error (the probe reports it).
    """
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = sr or stream.codec_context.sample_rate
        layout = stream.codec_context.layout
        channels = stream.codec_context.channels or (layout.nb_channels if layout else 1)
        resampler = av.AudioResampler(format="fltp", layout=layout if layout and layout.nb_channels else channels,
                                      rate=rate)
        pending: list[np.ndarray] = []
        size, target = 0, int(chunk_s * rate)

        def flush() -> np.ndarray:
            data = np.ascontiguousarray(np.concatenate(pending, axis=1).T.astype(np.float32, copy=False))
            pending.clear()
            return data

        def frames():
            try:
                for frame in container.decode(stream):
                    yield from resampler.resample(frame)
            except av.FFmpegError:
                pass
            yield from resampler.resample(None)

        for out in frames():
            pending.append(out.to_ndarray())
            size += out.samples
            if size >= target:
                yield flush(), int(rate)
                size = 0
        if pending:
            yield flush(), int(rate)


@dataclass(frozen=True)
class AudioMeasures:
    sample_rate: int
    channels: int
    samples: int
    integrated_lufs: float
    true_peak_dbtp: float
    clipping_runs: int
    phase_correlation: float
    leading_silence_s: float
    trailing_silence_s: float


def measure_file(path: str | Path, chunk_s: float = 10.0) -> AudioMeasures | None:
    """All measurements of the first audio stream of `path` in one streaming pass; None when it decodes empty."""
    meters: dict = {}
    rate = channels = samples = 0
    for chunk, rate in iter_audio(path, chunk_s):
        if not meters:
            channels = chunk.shape[1]
            meters = {"lufs": LoudnessMeter(rate, channels), "peak": TruePeak(), "clip": ClippingRuns(),
                      "corr": PhaseCorrelation(), "edges": EdgeSilence(rate)}
        for meter in meters.values():
            meter.add(chunk)
        samples += len(chunk)
    if not meters or samples == 0:
        return None
    lead, trail = meters["edges"].result()
    return AudioMeasures(sample_rate=rate, channels=channels, samples=samples,
                         integrated_lufs=meters["lufs"].result(), true_peak_dbtp=meters["peak"].result(),
                         clipping_runs=meters["clip"].result(), phase_correlation=meters["corr"].result(),
                         leading_silence_s=lead, trailing_silence_s=trail)
