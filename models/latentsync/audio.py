"""LatentSync audio path: waveform -> whisper log-mel -> 5 stacked encoder layers -> per-video-frame chunks.

Follows SPEC.md section 3 (official LatentSync 1.5/1.6 code line):

* log-mel of the **whole file** (the clamp "max - 8" uses the global maximum, not a per-window one);
* 30-s windows of 3000 mel columns, right-padded with zeros in the normalised log-mel domain, each encoded
  separately; from each window only ``floor(window_len / 2)`` encoder rows are kept;
* the encoder features are the block input (after the positional table) and the output of every block,
  i.e. ``n_layer + 1`` tensors **before** ``ln_post``, stacked to ``[T_enc, n_layer + 1, d]``;
* per video frame ``i`` a window of 10 encoder rows around ``2 i`` (clamped) -> ``[50, d]``.

The encoder itself is `transformers.WhisperEncoder` fed with openai-whisper ``tiny.pt`` weights through an
explicit key map. openai scales q and k by ``head_dim ** -0.25`` each, transformers scales q by
``head_dim ** -0.5``: the same product up to float rounding; on CPU float32 the mel, features and chunks are
bit-identical to the official goldens. ``config.tie_last_hidden_states = False`` keeps ``hidden_states[-1]``
as the last block's output (transformers otherwise replaces it with the ``ln_post`` output).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from lipline.errors import EngineError, MediaToolError

from .checkpoint import CheckpointMismatchError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
WINDOW_MEL_FRAMES = 3000  # 30 s of mel columns per encoder window
FEATURES_PER_SECOND = 50  # encoder rows per second (conv2 has stride 2)
AUDIO_FEAT_LENGTH = (2, 2)  # official `audio_feat_length`: video frames of context left / right


class AudioCheckpointError(CheckpointMismatchError):
    """The whisper checkpoint cannot be used: missing/unexpected/mis-shaped ``encoder.*`` keys, or no dims.

    A `CheckpointMismatchError` (``missing``, ``unexpected``, ``mismatched`` attributes) with a whisper message.
    """

    def __init__(self, source: str, problem: str, missing=(), unexpected=(), mismatched=()) -> None:
        self.source, self.missing, self.unexpected, self.mismatched = source, list(missing), list(unexpected), list(mismatched)
        EngineError.__init__(self, f"{source}: {problem}. Expected an openai-whisper checkpoint (tiny.pt: dims + model_state_dict).")


# --------------------------------------------------------------------------------------------------
# Waveform


def load_audio_16k(path: str | os.PathLike) -> np.ndarray:
    """Decode any audio (or video) file to 16 kHz mono float32 in [-1, 1) (``int16 / 32768``, SPEC 3.1).

    Uses the ffmpeg binary shipped by ``imageio_ffmpeg``; arguments are passed as a list, never a shell string.

    Returns:
        ``np.ndarray`` float32 ``[n_samples]``.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise MediaToolError(f"{path}: audio file not found")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-v", "error",
        "-threads", "0",
        "-i", str(path),
        "-f", "s16le",
        "-ac", "1",
        "-acodec", "pcm_s16le",
        "-ar", str(SAMPLE_RATE),
        "-",
    ]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise MediaToolError(f"{path}: ffmpeg could not decode audio: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return np.frombuffer(proc.stdout, dtype=np.int16).astype(np.float32) / 32768.0


def mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """The whisper mel filterbank (librosa, Slaney norm) ``[n_mels, N_FFT // 2 + 1]`` float32."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)).float()


def log_mel_spectrogram(waveform: np.ndarray | torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Whisper log-mel of the whole waveform (SPEC 3.2).

    Args:
        waveform: float32 ``[n_samples]`` at 16 kHz.
        filters: ``[n_mels, 201]`` mel filterbank.

    Returns:
        float32 ``[n_mels, n_samples // 160]`` normalised log-mel (global max clamp).
    """
    audio = torch.as_tensor(np.asarray(waveform, dtype=np.float32)) if not torch.is_tensor(waveform) else waveform.float()
    if audio.ndim != 1:
        raise ValueError(f"waveform must be 1-D mono, got shape {tuple(audio.shape)}")
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)  # [201, n_frames + 1]
    magnitudes = stft[..., :-1].abs() ** 2  # drop the last frame -> [201, n_samples // 160]
    mel = filters.to(audio.device) @ magnitudes  # [n_mels, n]
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


# --------------------------------------------------------------------------------------------------
# Encoder


def _openai_to_transformers_keys(n_layer: int) -> dict[str, str]:
    """openai-whisper ``encoder.*`` name -> `WhisperEncoder` parameter name (explicit, one line each)."""
    mapping = {
        "encoder.conv1.weight": "conv1.weight",
        "encoder.conv1.bias": "conv1.bias",
        "encoder.conv2.weight": "conv2.weight",
        "encoder.conv2.bias": "conv2.bias",
        "encoder.positional_embedding": "embed_positions.weight",
        "encoder.ln_post.weight": "layer_norm.weight",
        "encoder.ln_post.bias": "layer_norm.bias",
    }
    per_block = {
        "attn.query.weight": "self_attn.q_proj.weight",
        "attn.query.bias": "self_attn.q_proj.bias",
        "attn.key.weight": "self_attn.k_proj.weight",  # openai's key projection has no bias (nor has HF's)
        "attn.value.weight": "self_attn.v_proj.weight",
        "attn.value.bias": "self_attn.v_proj.bias",
        "attn.out.weight": "self_attn.out_proj.weight",
        "attn.out.bias": "self_attn.out_proj.bias",
        "attn_ln.weight": "self_attn_layer_norm.weight",
        "attn_ln.bias": "self_attn_layer_norm.bias",
        "mlp.0.weight": "fc1.weight",
        "mlp.0.bias": "fc1.bias",
        "mlp.2.weight": "fc2.weight",
        "mlp.2.bias": "fc2.bias",
        "mlp_ln.weight": "final_layer_norm.weight",
        "mlp_ln.bias": "final_layer_norm.bias",
    }
    for i in range(n_layer):
        for src, dst in per_block.items():
            mapping[f"encoder.blocks.{i}.{src}"] = f"layers.{i}.{dst}"
    return mapping


_DIMS_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


class AudioEncoder(torch.nn.Module):
    """Whisper audio encoder returning LatentSync's 5 stacked pre-``ln_post`` layers.

    Args:
        n_mels: mel bands (80).
        n_audio_ctx: encoder positions per 30-s window (1500).
        n_audio_state: width ``d`` (384 for tiny).
        n_audio_head: attention heads (6 for tiny).
        n_audio_layer: residual blocks (4 for tiny) -> ``n_audio_layer + 1`` feature layers.
    """

    def __init__(self, n_mels: int = 80, n_audio_ctx: int = 1500, n_audio_state: int = 384, n_audio_head: int = 6, n_audio_layer: int = 4) -> None:
        super().__init__()
        if n_audio_ctx * 2 != WINDOW_MEL_FRAMES:
            raise ValueError(f"n_audio_ctx must be {WINDOW_MEL_FRAMES // 2} (30-s windows), got {n_audio_ctx}")
        if n_audio_state % n_audio_head:
            raise ValueError(f"n_audio_state ({n_audio_state}) must be divisible by n_audio_head ({n_audio_head})")
        self.dims = {"n_mels": n_mels, "n_audio_ctx": n_audio_ctx, "n_audio_state": n_audio_state, "n_audio_head": n_audio_head, "n_audio_layer": n_audio_layer}
        config = WhisperConfig(
            num_mel_bins=n_mels,
            d_model=n_audio_state,
            encoder_layers=n_audio_layer,
            encoder_attention_heads=n_audio_head,
            encoder_ffn_dim=4 * n_audio_state,
            max_source_positions=n_audio_ctx,
            activation_function="gelu",  # exact erf GELU, as openai's F.gelu
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            encoder_layerdrop=0.0,
            scale_embedding=False,
            attn_implementation="eager",  # softmax in the input dtype; sdpa differs only in the last bits
        )
        # `hidden_states[-1]` must be the last block's output, not `ln_post(...)` (LatentSync skips ln_post).
        config.tie_last_hidden_states = False
        self.encoder = WhisperEncoder(config).eval()
        self.register_buffer("mel_filters", mel_filters(n_mels), persistent=False)

    # ---- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_openai_checkpoint(cls, path_or_dict: str | os.PathLike | Mapping[str, Any], dims: Mapping[str, int] | None = None) -> "AudioEncoder":
        """Build from an openai-whisper checkpoint.

        Args:
            path_or_dict: a ``tiny.pt`` path (``torch.load(weights_only=True)``), a ``.safetensors`` path holding
                ``encoder.*`` tensors, a ``{"dims", "model_state_dict"}`` dict, or a bare state dict.
            dims: whisper ``dims`` (``n_mels``, ``n_audio_ctx``, ``n_audio_state``, ``n_audio_head``,
                ``n_audio_layer``); required when the checkpoint does not carry them.

        ``encoder.*`` keys are loaded strictly (missing or unexpected -> `AudioCheckpointError`); ``decoder.*``
        keys are ignored. float16 weights are cast to float32.
        """
        source = "whisper state dict"
        if isinstance(path_or_dict, (str, os.PathLike)):
            path = Path(path_or_dict)
            source = str(path)
            if not path.is_file():
                raise AudioCheckpointError(str(path), "whisper checkpoint not found")
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                ckpt: Mapping[str, Any] = load_file(str(path))
            else:
                ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            ckpt = path_or_dict
        if "model_state_dict" in ckpt:
            dims = dims if dims is not None else ckpt.get("dims")
            state = ckpt["model_state_dict"]
        else:
            state = ckpt
        if dims is None:
            raise AudioCheckpointError(source, "the checkpoint carries no 'dims'; pass dims=")
        missing_dims = [k for k in _DIMS_KEYS if k not in dims]
        if missing_dims:
            raise AudioCheckpointError(source, f"whisper dims lack {missing_dims}; got {sorted(dims)}")
        model = cls(**{k: int(dims[k]) for k in _DIMS_KEYS})

        mapping = _openai_to_transformers_keys(model.dims["n_audio_layer"])
        encoder_keys = {k for k in state if k.startswith("encoder.")}
        missing = sorted(set(mapping) - encoder_keys)
        unexpected = sorted(encoder_keys - set(mapping))
        if missing or unexpected:
            raise AudioCheckpointError(
                source,
                f"whisper encoder keys do not match: {len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}",
                missing=missing,
                unexpected=unexpected,
            )
        target = model.encoder.state_dict()
        mismatched = [(src, tuple(state[src].shape), tuple(target[dst].shape)) for src, dst in mapping.items() if tuple(state[src].shape) != tuple(target[dst].shape)]
        if mismatched:
            raise AudioCheckpointError(source, f"{len(mismatched)} encoder tensors have the wrong shape, e.g. {mismatched[:3]}", mismatched=mismatched)
        converted = {dst: state[src].float() for src, dst in mapping.items()}
        model.encoder.load_state_dict(converted, strict=True)
        return model

    # ---- forward pieces --------------------------------------------------------------------------

    @property
    def n_layers_out(self) -> int:
        return self.dims["n_audio_layer"] + 1

    @torch.no_grad()
    def log_mel(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Whole-file log-mel ``[n_mels, n_samples // 160]`` float32 (SPEC 3.2)."""
        if torch.is_tensor(waveform):
            waveform = waveform.detach().cpu()
        return log_mel_spectrogram(waveform, self.mel_filters.cpu())

    @torch.no_grad()
    def encode_window(self, mel_window: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Encode padded 30-s windows.

        Args:
            mel_window: ``[B, n_mels, 3000]`` normalised log-mel.
            dtype: compute dtype; float16 runs under autocast (LayerNorm/softmax in float32, as the official).

        Returns:
            ``[B, n_audio_ctx, n_layer + 1, d]``: block input + each block's output, before ``ln_post``.
        """
        device = next(self.encoder.parameters()).device
        mel_window = mel_window.to(device=device, dtype=torch.float32)
        use_autocast = dtype is not None and dtype != torch.float32
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=use_autocast):
            out = self.encoder(mel_window, output_hidden_states=True)
        hidden = out.hidden_states  # (n_layer + 1) x [B, ctx, d]
        if len(hidden) != self.n_layers_out:
            raise RuntimeError(f"expected {self.n_layers_out} hidden states from the encoder, got {len(hidden)}")
        return torch.stack(hidden, dim=2).to(dtype or torch.float32)  # [B, ctx, n_layer + 1, d]

    @torch.no_grad()
    def features_from_mel(self, mel: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Cut the whole-file log-mel into 30-s windows, encode each and concatenate (SPEC 3.3).

        Args:
            mel: ``[n_mels, n]``.

        Returns:
            ``[T_enc, n_layer + 1, d]`` with ``T_enc = sum(floor(window_len / 2))``.
        """
        n_mel = mel.shape[-1]
        pieces = []
        for start in range(0, n_mel, WINDOW_MEL_FRAMES):
            end = min(start + WINDOW_MEL_FRAMES, n_mel)
            window = torch.zeros(1, mel.shape[0], WINDOW_MEL_FRAMES, dtype=torch.float32)
            window[0, :, : end - start] = mel[:, start:end]  # zero padding in the normalised domain
            feats = self.encode_window(window, dtype=dtype)[0]  # [ctx, L, d]
            pieces.append(feats[: (end - start) // 2].cpu())
        if not pieces:
            return torch.zeros(0, self.n_layers_out, self.dims["n_audio_state"], dtype=dtype or torch.float32)
        return torch.cat(pieces, dim=0)

    @torch.no_grad()
    def features(self, waveform: np.ndarray | torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Waveform (16 kHz float32) -> encoder features ``[T_enc, n_layer + 1, d]`` on CPU."""
        return self.features_from_mel(self.log_mel(waveform), dtype=dtype)

    def forward(self, waveform: np.ndarray | torch.Tensor, fps: float = 25.0) -> torch.Tensor:
        """Waveform -> per-video-frame chunks ``[n_chunks, 10 * (n_layer + 1), d]`` (``[n, 50, d]`` for whisper)."""
        return feature_chunks(self.features(waveform), fps=fps)


# --------------------------------------------------------------------------------------------------
# Per-frame chunks


def num_chunks(t_enc: int, fps: float = 25.0) -> int:
    """Number of video frames the official chunking produces (``floor(T_enc / 2) + 2`` at 25 fps)."""
    n = 0
    while True:
        centre = int(n * FEATURES_PER_SECOND / fps)
        n += 1
        if centre > t_enc:
            return n


def chunk_indices(t_enc: int, fps: float = 25.0) -> np.ndarray:
    """Encoder-row indices of every chunk ``[n_chunks, 10]`` int64 (SPEC 3.5).

    Chunk ``i`` takes rows ``centre - 2*left ... centre + 2*(right + 1) - 1`` with ``centre = int(i * 50 / fps)``,
    each clamped into ``[0, T_enc - 1]``.
    """
    if t_enc <= 0:
        raise ValueError(f"no encoder features (T_enc = {t_enc}); the audio is shorter than 20 ms")
    left, right = AUDIO_FEAT_LENGTH
    n = num_chunks(t_enc, fps)
    centres = np.array([int(i * FEATURES_PER_SECOND / fps) for i in range(n)], dtype=np.int64)
    offsets = np.arange(-2 * left, 2 * (right + 1), dtype=np.int64)  # -4 .. 5 -> 10 rows
    return np.clip(centres[:, None] + offsets[None, :], 0, t_enc - 1)


def feature_chunks(features: torch.Tensor, fps: float = 25.0) -> torch.Tensor:
    """Per-frame audio chunks ``[n_chunks, 10 * L, d]`` from features ``[T_enc, L, d]``.

    Row ``L * k + layer`` of a chunk is layer ``layer`` of its ``k``-th encoder row.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be [T_enc, layers, d], got shape {tuple(features.shape)}")
    idx = torch.from_numpy(chunk_indices(features.shape[0], fps)).to(features.device)
    chunks = features[idx]  # [n, 10, L, d]
    return chunks.reshape(chunks.shape[0], -1, features.shape[-1])  # [n, 10, L, d] -> [n, 10 * L, d]


__all__ = [
    "AudioCheckpointError",
    "AudioEncoder",
    "chunk_indices",
    "feature_chunks",
    "load_audio_16k",
    "log_mel_spectrogram",
    "mel_filters",
    "num_chunks",
]
