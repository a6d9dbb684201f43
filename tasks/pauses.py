"""Pauses in the dub: where segments may be cut.

`find_pauses` is `librosa.effects.split` (same dB rule, same interval edges — tested equal) computed over
`Samples`, an array or a sound file read piece by piece, so memory does not grow with the length of the dub.
"""

from __future__ import annotations

import numpy as np

from lipline.records import Record

MODEL_RATE = 16000


class Pause(Record):
    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def mid_s(self) -> float:
        return (self.start_s + self.end_s) / 2


class Samples:
    """Random access to mono samples as float64, zero outside [0, n): an in-memory array or a sound file read
    piece by piece (the planner never holds a long dub in memory)."""

    def __init__(self, n: int, read) -> None:
        self.size, self._read = n, read

    @classmethod
    def of_array(cls, y: np.ndarray, n: int | None = None) -> "Samples":
        y = np.asarray(y).reshape(-1)
        scale = 1 / 32768.0 if np.issubdtype(y.dtype, np.integer) else 1.0
        return cls(y.size if n is None else n, lambda lo, hi: y[lo:hi].astype(np.float64) * scale)

    @classmethod
    def of_file(cls, handle, n: int | None = None) -> "Samples":
        def read(lo: int, hi: int) -> np.ndarray:
            handle.seek(lo)
            data = handle.read(hi - lo, dtype="float64", always_2d=True)
            return data.mean(axis=1)
        return cls(handle.frames if n is None else n, read)

    def window(self, lo: int, hi: int, available: int) -> np.ndarray:
        """Samples [lo, hi) with zeros before 0 and from min(size, available) on."""
        out = np.zeros(hi - lo, dtype=np.float64)
        a, b = max(lo, 0), min(hi, self.size, available)
        if b > a:
            out[a - lo: b - lo] = self._read(a, b)
        return out


def framewise_rms(y: np.ndarray | Samples, frame_length: int, hop_length: int, chunk_frames: int = 4096,
                  available: int | None = None) -> np.ndarray:
    """`librosa.feature.rms(y, center=True)` (zero padding), computed a chunk of frames at a time: memory stays
    proportional to the chunk, not to the (4x overlapped) framed signal librosa materialises. `available` caps
    the samples that exist (the rest of `size` is zero padding)."""
    src = y if isinstance(y, Samples) else Samples.of_array(y)
    half = frame_length // 2
    n_frames = 1 + (src.size + 2 * half - frame_length) // hop_length
    out = np.empty(n_frames, dtype=np.float64)
    for a in range(0, n_frames, chunk_frames):
        b = min(n_frames, a + chunk_frames)
        lo, hi = a * hop_length - half, (b - 1) * hop_length - half + frame_length  # in unpadded sample units
        seg = src.window(lo, hi, src.size if available is None else available)
        cum = np.concatenate(([0.0], np.cumsum(seg * seg)))
        starts = np.arange(b - a) * hop_length
        out[a:b] = np.sqrt(np.maximum(cum[starts + frame_length] - cum[starts], 0.0) / frame_length)
    return out


def split_nonsilent(y: np.ndarray | Samples, top_db: float, frame_length: int, hop_length: int,
                    available: int | None = None) -> np.ndarray:
    """`librosa.effects.split` (same dB rule and interval edges) on top of the chunked `framewise_rms`."""
    import librosa

    rms = framewise_rms(y, frame_length, hop_length, available=available)
    size = y.size
    if not rms.any():
        return np.zeros((0, 2), dtype=np.int64)
    non_silent = librosa.amplitude_to_db(rms, ref=np.max, top_db=None) > -top_db
    edges = [np.flatnonzero(np.diff(non_silent.astype(int))) + 1]
    if non_silent[0]:
        edges.insert(0, np.array([0]))
    if non_silent[-1]:
        edges.append(np.array([len(non_silent)]))
    bounds = np.minimum(librosa.frames_to_samples(np.concatenate(edges), hop_length=hop_length), size)
    return bounds.reshape((-1, 2))


def find_pauses(samples: np.ndarray | Samples, sr: int = MODEL_RATE, top_db: float = 40.0, min_pause_s: float = 0.15,
                hop_length: int = 160, frame_length: int = 640, available: int | None = None) -> list[Pause]:
    """Silences between the non-silent intervals of `librosa.effects.split` (plus leading/trailing silence)."""
    y = samples if isinstance(samples, Samples) else Samples.of_array(np.asarray(samples, dtype=np.float32))
    n = y.size
    if n == 0:
        return []
    intervals = split_nonsilent(y, top_db=top_db, frame_length=frame_length, hop_length=hop_length,
                                available=available)
    if len(intervals) == 0:  # all silent
        return [Pause(start_s=0.0, end_s=n / sr)]
    pauses: list[Pause] = []
    prev_end = 0
    for start, end in intervals:
        if (start - prev_end) / sr >= min_pause_s:
            pauses.append(Pause(start_s=prev_end / sr, end_s=start / sr))
        prev_end = max(prev_end, int(end))
    if (n - prev_end) / sr >= min_pause_s:
        pauses.append(Pause(start_s=prev_end / sr, end_s=n / sr))
    return pauses
