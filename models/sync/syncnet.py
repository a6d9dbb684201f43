"""SyncNet LSE-C / LSE-D (the lip-sync metrics of Wav2Lip's and LatentSync's evaluations), from user-given weights.

Architecture: ``syncnet_v2`` — the ``S`` model of joonson/syncnet_python (``SyncNetModel.py``), used by
``SyncNetInstance`` and by the official LatentSync / Wav2Lip evaluation scripts: ``netcnnaud`` + ``netfcaud``
embed 0.2 s of MFCCs, ``netcnnlip`` + ``netfclip`` embed 5 face frames (224×224, BGR, 0..255), both to 1024-d.

Weights file: the official ``syncnet_v2.model`` format, a ``torch.save``'d dict of parameter and buffer tensors
named as in `SyncNetS`'s ``state_dict`` (``netcnnaud.0.weight``, …; BatchNorm ``num_batches_tracked`` may be
absent). `load_syncnet` loads it strictly: a missing or unexpected key or a wrong shape is refused by name.

Scores (``SyncNetInstance.evaluate``): for every 5-frame window ``i`` the distances between its lip embedding and
the audio embeddings of windows ``i−15 … i+15`` (zero-padded at the ends); ``mdist`` = their mean over ``i`` per
shift. **LSE-D** = min(mdist) (lower is better), **LSE-C** = median(mdist) − min(mdist) (higher is better), and
the offset is the shift of the minimum. Official offset = 15 − argmin, positive when the audio is *early*;
``offset_frames`` here follows Lipline's sign (+ = audio late): ``argmin − 15``.

Inputs as the official pipeline makes them: 25 fps (other rates: nearest frames), 16 kHz mono audio as int16
values, MFCC = ``python_speech_features.mfcc`` defaults (`mfcc`), face crop = the official ``crop_video`` crop
(box half-size s, 40 % margin, 110-grey padding) — from the face track's landmark box instead of S3FD's box,
each median-filtered over 13 frames as the official tracker does. Frames without a usable face take the nearest
usable frame's box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipline.errors import LiplineError

FPS = 25
SAMPLE_RATE = 16000
VSHIFT = 15
WINDOW = 5  # video frames per lip window; 20 MFCC columns (4 per frame) per audio window
CROP_SCALE = 0.4
CROP_SIDE = 224


class SyncNetWeightsError(LiplineError):
    """The SyncNet weights file is missing or is not a ``syncnet_v2`` state dict."""


def _conv_bn_relu(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)]


class SyncNetS(nn.Module):
    """The ``syncnet_v2`` ``S`` model. Module indices equal the official ones, so state-dict keys match.

    Args:
        embedding_dim: output size of both towers (1024 in ``syncnet_v2``).
    """

    def __init__(self, embedding_dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, (3, 3), (1, 1), (1, 1)), nn.BatchNorm2d(64)),
            nn.MaxPool2d((1, 1), (1, 1)),
            *_conv_bn_relu(nn.Conv2d(64, 192, (3, 3), (1, 1), (1, 1)), nn.BatchNorm2d(192)),
            nn.MaxPool2d((3, 3), (1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, (3, 3), padding=(1, 1)), nn.BatchNorm2d(384)),
            *_conv_bn_relu(nn.Conv2d(384, 256, (3, 3), padding=(1, 1)), nn.BatchNorm2d(256)),
            *_conv_bn_relu(nn.Conv2d(256, 256, (3, 3), padding=(1, 1)), nn.BatchNorm2d(256)),
            nn.MaxPool2d((3, 3), (2, 2)),
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=(0, 0)), nn.BatchNorm2d(512)),
        )
        self.netfcaud = _fc(embedding_dim)
        self.netfclip = _fc(embedding_dim)
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), nn.BatchNorm3d(96)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0), nn.BatchNorm3d(512)),
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """[b, 1, 13, 20] MFCC windows → [b, embedding_dim]."""
        mid = self.netcnnaud(mfcc)  # [b, 512, 1, 1]
        return self.netfcaud(mid.view(mid.shape[0], -1))  # [b, 512] -> [b, d]

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """[b, 3, 5, 224, 224] BGR 0..255 face windows → [b, embedding_dim]."""
        mid = self.netcnnlip(frames)  # [b, 512, 1, 1, 1]
        return self.netfclip(mid.view(mid.shape[0], -1))  # [b, 512] -> [b, d]


def _fc(embedding_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding_dim))


def load_syncnet(path: str | Path) -> SyncNetS:
    """`SyncNetS` with the weights of ``path`` (official ``syncnet_v2.model`` format), strictly, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise SyncNetWeightsError(f"{path}: SyncNet weights: no such file. Set LIPLINE_SYNCNET_WEIGHTS (or "
                                  "--syncnet) to the syncnet_v2.model file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means "not a weights file"
        raise SyncNetWeightsError(f"{path}: SyncNet weights: not a torch state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SyncNetWeightsError(f"{path}: SyncNet weights: expected a dict of tensors (syncnet_v2.model format)")
    model = SyncNetS()
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise SyncNetWeightsError(f"{path}: not syncnet_v2 weights: {'; '.join(parts)}")
    model.load_state_dict({**{k: own[k] for k in optional}, **state}, strict=True)
    return model.eval()


# --- audio features: python_speech_features.mfcc with its defaults -------------------------------------------

def mfcc(samples: np.ndarray, sr: int = SAMPLE_RATE, numcep: int = 13, nfilt: int = 26, nfft: int = 512,
         winlen: float = 0.025, winstep: float = 0.01, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """MFCCs as ``python_speech_features.mfcc(samples, sr)`` computes them (defaults; c0 = log frame energy).

    Args:
        samples: (n,) mono audio in int16 units (the official pipeline reads a 16-bit WAV with scipy).
    Returns:
        (numcep, frames) float64, 100 frames per second.
    """
    from scipy.fft import dct

    x = np.asarray(samples, np.float64)
    x = np.append(x[0], x[1:] - preemph * x[:-1]) if x.size else np.zeros(1)
    frame_len, step = int(_round_half_up(winlen * sr)), int(_round_half_up(winstep * sr))
    count = 1 if x.size <= frame_len else 1 + int(np.ceil((x.size - frame_len) / step))
    padded = np.concatenate([x, np.zeros((count - 1) * step + frame_len - x.size)])
    frames = padded[np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]]  # [frames, frame_len]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft  # [frames, nfft/2+1]
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feat = power @ _mel_filterbank(nfilt, nfft, sr).T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    cep *= 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    cep[:, 0] = np.log(energy)
    return cep.T


def _round_half_up(value: float) -> float:
    import decimal

    return float(decimal.Decimal(value).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _mel_filterbank(nfilt: int, nfft: int, sr: int) -> np.ndarray:
    mel = np.linspace(0.0, 2595 * np.log10(1 + (sr / 2) / 700.0), nfilt + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (mel / 2595.0) - 1)) / sr)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


# --- face crops ----------------------------------------------------------------------------------------------

def crop_boxes(boxes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(n, 3) official crop parameters (centre x, centre y, half-size s) per frame from (n, 4) x,y,w,h boxes:
    unusable frames take the nearest usable frame's box; each column median-filtered over 13 frames."""
    from scipy.signal import medfilt

    usable = np.flatnonzero(valid)
    if usable.size == 0:
        raise ValueError("no usable face: SyncNet needs face crops")
    nearest = usable[np.abs(np.arange(len(valid))[:, None] - usable[None, :]).argmin(axis=1)]
    b = np.asarray(boxes, np.float64)[nearest]
    params = np.stack([b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2, np.maximum(b[:, 2], b[:, 3]) / 2], axis=1)
    if len(params) >= 13:
        params = np.stack([medfilt(params[:, k], 13) for k in range(3)], axis=1)
    return params


def crop_face(bgr: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """The official ``crop_video`` crop of one BGR frame → (224, 224, 3) uint8."""
    import cv2

    pad = int(s * (1 + 2 * CROP_SCALE))
    frame = np.pad(bgr, ((pad, pad), (pad, pad), (0, 0)), "constant", constant_values=110)
    my, mx = cy + pad, cx + pad
    face = frame[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)), int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    return cv2.resize(face, (CROP_SIDE, CROP_SIDE))


# --- scores --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyncNetScores:
    lse_c: float  # confidence: median − min of the mean distance curve (higher is better)
    lse_d: float  # min of the mean distance curve (lower is better)
    offset_frames: int  # + = audio late (official offset with the sign flipped)
    windows: int  # 5-frame windows evaluated

    def to_dict(self) -> dict:
        return {"lse_c": round(self.lse_c, 4), "lse_d": round(self.lse_d, 4), "offset_frames": self.offset_frames,
                "windows": self.windows, "vshift": VSHIFT}


def distance_curve(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """``calc_pdist`` + mean: (2·vshift+1,) mean distance of lip window i to audio window i+k−vshift over i.

    Args:
        lip: [n, d] lip embeddings; aud: [n, d] audio embeddings of the same windows.
    """
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))  # [n + 2·vshift, d], zeros at the ends
    width = 2 * vshift + 1
    dists = torch.stack([torch.nn.functional.pairwise_distance(lip[[i], :].repeat(width, 1), padded[i:i + width])
                         for i in range(lip.shape[0])], dim=1)  # [width, n]
    return dists.mean(dim=1)


def scores_from_curve(mdist: torch.Tensor, windows: int, vshift: int = VSHIFT) -> SyncNetScores:
    minval, minidx = torch.min(mdist, 0)
    return SyncNetScores(lse_c=float(torch.median(mdist) - minval), lse_d=float(minval),
                         offset_frames=int(minidx) - vshift, windows=windows)


@torch.no_grad()
def syncnet_scores(model: SyncNetS, video: str | Path, audio: str | Path, track, *, batch: int = 20,
                   vshift: int = VSHIFT) -> SyncNetScores:
    """LSE-C / LSE-D of ``video`` (face crops from ``track``) against ``audio`` (a file with an audio stream).

    Runs where ``model`` is (``load_syncnet(path).to("cuda")`` for a GPU). Streams the video: at most
    ``batch + 4`` crops are held. Raises ``ValueError`` without a usable face, without
    audio, or when the clip is shorter than one 5-frame window.
    """
    import cv2

    from lipline.models.face.video import iter_frames
    from lipline.models.sync.measure import read_mono

    device = next(model.parameters()).device
    samples = read_mono(audio, SAMPLE_RATE)
    cct = torch.from_numpy(mfcc(np.clip(samples, -1, 1) * 32767.0).astype(np.float32))[None, None]  # [1,1,13,T]
    pick = _frames_at_25(track.frame_count, track.fps)  # source frame of every 25-fps frame
    params = crop_boxes(track.boxes, track.valid)
    n = min(len(pick), samples.size // 640)
    last = n - WINDOW  # windows 0 .. last-1, as the official `lastframe = min_length - 5`
    if last < 1:
        raise ValueError(f"too short for SyncNet: {n} frames at 25 fps (needs ≥ {WINDOW + 1})")
    wanted: dict[int, list[int]] = {}
    for j, source in enumerate(pick[:n]):
        wanted.setdefault(int(source), []).append(j)
    crops: list[np.ndarray] = []  # crops of 25-fps frames done .. done + len(crops)
    done = 0
    lip_feats, aud_feats = [], []

    def embed(count: int) -> None:
        nonlocal done, crops
        clip = torch.from_numpy(np.stack(crops[:count + WINDOW - 1]).astype(np.float32))  # [f, 224, 224, 3]
        clip = clip.permute(3, 0, 1, 2)[None].to(device)  # [f,h,w,c] -> [1,c,f,h,w]
        lip_feats.append(model.forward_lip(torch.cat([clip[:, :, i:i + WINDOW] for i in range(count)])).cpu())
        aud_feats.append(model.forward_aud(torch.cat([cct[..., (done + i) * 4:(done + i) * 4 + 20]
                                                      for i in range(count)]).to(device)).cpu())
        crops, done = crops[count:], done + count

    for index, (_, rgb) in enumerate(iter_frames(video)):
        for j in wanted.get(index, ()):
            crops.append(crop_face(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), *params[int(pick[j])]))
        while len(crops) >= batch + WINDOW - 1 and done + batch <= last:
            embed(batch)
        if index >= pick[n - 1]:
            break
    last = min(last, done + len(crops) - WINDOW + 1)  # a video that decodes short of its header's length
    if last - done > 0:
        embed(last - done)
    if not lip_feats:
        raise ValueError("no face windows could be decoded for SyncNet")
    lip, aud = torch.cat(lip_feats), torch.cat(aud_feats)
    return scores_from_curve(distance_curve(lip, aud, vshift), lip.shape[0], vshift)


def _frames_at_25(frame_count: int, fps: float) -> np.ndarray:
    """Source frame index shown at each 25-fps frame time (the official pipeline re-times to 25 fps)."""
    if not fps or abs(fps - FPS) < 1e-3:
        return np.arange(frame_count)
    count = int(np.floor(frame_count * FPS / fps))
    return np.minimum(np.floor(np.arange(count) * fps / FPS + 1e-6).astype(int), frame_count - 1)
