"""LatentSync audio path: decode, log-mel, 5-layer whisper features, per-frame chunks (SPEC 3)."""

from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from lipline.models.latentsync.checkpoint import CheckpointMismatchError
from lipline.models.latentsync.audio import (
    AudioCheckpointError,
    AudioEncoder,
    chunk_indices,
    feature_chunks,
    load_audio_16k,
    mel_filters,
    num_chunks,
)

TINY_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 16, "n_audio_head": 2, "n_audio_layer": 2}


def _openai_state_dict(dims: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random encoder weights named like openai-whisper's ``model_state_dict``."""
    g = torch.Generator().manual_seed(seed)
    d, n_mels = dims["n_audio_state"], dims["n_mels"]

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "encoder.conv1.weight": r(d, n_mels, 3), "encoder.conv1.bias": r(d),
        "encoder.conv2.weight": r(d, d, 3), "encoder.conv2.bias": r(d),
        "encoder.positional_embedding": r(dims["n_audio_ctx"], d),
        "encoder.ln_post.weight": 1 + r(d), "encoder.ln_post.bias": r(d),
    }  # fmt: skip
    for i in range(dims["n_audio_layer"]):
        p = f"encoder.blocks.{i}."
        for name in ("query", "value", "out"):
            sd[p + f"attn.{name}.weight"], sd[p + f"attn.{name}.bias"] = r(d, d), r(d)
        sd[p + "attn.key.weight"] = r(d, d)
        for ln in ("attn_ln", "mlp_ln"):
            sd[p + f"{ln}.weight"], sd[p + f"{ln}.bias"] = 1 + r(d), r(d)
        sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = r(4 * d, d), r(4 * d)
        sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"] = r(d, 4 * d), r(d)
    return sd


def _reference_features(sd: dict, dims: dict, mel: torch.Tensor) -> torch.Tensor:
    """openai-whisper's encoder math written out (q and k each scaled by head_dim ** -0.25), 5 layers stacked."""
    import torch.nn.functional as F

    d, heads = dims["n_audio_state"], dims["n_audio_head"]
    x = F.gelu(F.conv1d(mel[None], sd["encoder.conv1.weight"], sd["encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, sd["encoder.conv2.weight"], sd["encoder.conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + sd["encoder.positional_embedding"]
    outs = [x]
    scale = (d // heads) ** -0.25
    for i in range(dims["n_audio_layer"]):
        p = f"encoder.blocks.{i}."
        h = F.layer_norm(x, (d,), sd[p + "attn_ln.weight"], sd[p + "attn_ln.bias"])
        q = F.linear(h, sd[p + "attn.query.weight"], sd[p + "attn.query.bias"])
        k = F.linear(h, sd[p + "attn.key.weight"])
        v = F.linear(h, sd[p + "attn.value.weight"], sd[p + "attn.value.bias"])
        q, k, v = (t.view(1, -1, heads, d // heads).permute(0, 2, 1, 3) for t in (q, k, v))
        w = ((q * scale) @ (k * scale).transpose(-1, -2)).float().softmax(-1)
        a = (w @ v).permute(0, 2, 1, 3).flatten(2)
        x = x + F.linear(a, sd[p + "attn.out.weight"], sd[p + "attn.out.bias"])
        h = F.layer_norm(x, (d,), sd[p + "mlp_ln.weight"], sd[p + "mlp_ln.bias"])
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"])), sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
        outs.append(x)
    return torch.stack(outs, dim=2)[0]  # [1500, L + 1, d]


# ---------------------------------------------------------------------------------------------- chunks


@pytest.mark.parametrize("t_enc", [1, 2, 3, 50, 51, 1500, 1520])
def test_num_chunks_formula(t_enc):
    assert num_chunks(t_enc) == t_enc // 2 + 2
    idx = chunk_indices(t_enc)
    assert idx.shape == (t_enc // 2 + 2, 10)
    assert idx.min() >= 0 and idx.max() <= t_enc - 1


def test_chunk_indices_window_around_2i():
    idx = chunk_indices(100)
    np.testing.assert_array_equal(idx[10], np.arange(16, 26))  # 2i-4 .. 2i+5
    np.testing.assert_array_equal(idx[0], [0, 0, 0, 0, 0, 1, 2, 3, 4, 5])  # clamped at 0
    np.testing.assert_array_equal(idx[-1], [98] + [99] * 9)  # last chunk i = 51, centre 102: clamped at T_enc - 1


def test_feature_chunks_row_major_layout():
    t_enc, layers, d = 12, 5, 3
    feats = torch.arange(t_enc * layers * d, dtype=torch.float32).reshape(t_enc, layers, d)
    chunks = feature_chunks(feats)
    assert chunks.shape == (t_enc // 2 + 2, 10 * layers, d)
    idx = chunk_indices(t_enc)
    for i in (0, 3, len(idx) - 1):
        for k in range(10):
            for layer in range(layers):
                torch.testing.assert_close(chunks[i, layers * k + layer], feats[idx[i, k], layer], rtol=0, atol=0)


def test_feature_chunks_rejects_wrong_rank():
    with pytest.raises(ValueError, match="T_enc, layers, d"):
        feature_chunks(torch.zeros(10, 64))


# ---------------------------------------------------------------------------------------------- encoder


def test_encoder_matches_openai_math_and_skips_ln_post():
    sd = _openai_state_dict(TINY_DIMS)
    enc = AudioEncoder.from_openai_checkpoint(sd, TINY_DIMS)
    mel = torch.randn(80, 3000, generator=torch.Generator().manual_seed(1)) * 0.5
    got = enc.encode_window(mel[None])[0]
    want = _reference_features(sd, TINY_DIMS, mel)
    assert got.shape == (1500, TINY_DIMS["n_audio_layer"] + 1, TINY_DIMS["n_audio_state"])
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


def test_features_window_split_and_lengths():
    enc = AudioEncoder.from_openai_checkpoint(_openai_state_dict(TINY_DIMS), TINY_DIMS)
    wave_ = np.random.default_rng(0).standard_normal(16000 * 31).astype(np.float32) * 0.1
    mel = enc.log_mel(wave_)
    assert mel.shape == (80, 16000 * 31 // 160)
    feats = enc.features_from_mel(mel)
    assert feats.shape == (3000 // 2 + 100 // 2, 3, 16)
    # the second window is encoded on its own with zero padding in the normalised log-mel domain
    padded = torch.zeros(1, 80, 3000)
    padded[0, :, :100] = mel[:, 3000:]
    torch.testing.assert_close(feats[1500:], enc.encode_window(padded)[0, :50], rtol=0, atol=0)


def test_log_mel_uses_whole_file_maximum():
    enc = AudioEncoder.from_openai_checkpoint(_openai_state_dict(TINY_DIMS), TINY_DIMS)
    rng = np.random.default_rng(1)
    quiet = rng.standard_normal(16000).astype(np.float32) * 1e-3
    loud = rng.standard_normal(16000).astype(np.float32)
    whole = enc.log_mel(np.concatenate([quiet, loud]))
    assert float(whole.max()) == pytest.approx(float(enc.log_mel(loud).max()), abs=1e-3)
    # the clamp uses the global maximum: no value lies below max - 8 (in log10 units, i.e. 2 after /4)
    assert float(whole.min()) >= float(whole.max()) - 2.0 - 1e-6


def test_from_openai_checkpoint_file_format_and_decoder_ignored(tmp_path):
    sd = _openai_state_dict(TINY_DIMS)
    full = dict(sd, **{"decoder.token_embedding.weight": torch.zeros(4, 16)})
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dict(TINY_DIMS, n_vocab=4), "model_state_dict": full}, path)
    enc = AudioEncoder.from_openai_checkpoint(path)
    assert enc.dims == TINY_DIMS
    torch.testing.assert_close(enc.encoder.layers[1].self_attn.k_proj.weight, sd["encoder.blocks.1.attn.key.weight"])


def test_from_openai_checkpoint_strict_encoder_keys():
    sd = _openai_state_dict(TINY_DIMS)
    missing = {k: v for k, v in sd.items() if k != "encoder.ln_post.bias"}
    with pytest.raises(CheckpointMismatchError, match="missing") as info:
        AudioEncoder.from_openai_checkpoint(missing, TINY_DIMS)
    assert info.value.missing == ["encoder.ln_post.bias"]
    extra = dict(sd, **{"encoder.blocks.0.attn.key.bias": torch.zeros(16)})
    with pytest.raises(AudioCheckpointError, match="unexpected"):
        AudioEncoder.from_openai_checkpoint(extra, TINY_DIMS)
    with pytest.raises(AudioCheckpointError, match="dims"):
        AudioEncoder.from_openai_checkpoint(sd)
    bad_shape = dict(sd, **{"encoder.conv2.bias": torch.zeros(3)})
    with pytest.raises(CheckpointMismatchError, match="wrong shape") as info:
        AudioEncoder.from_openai_checkpoint(bad_shape, TINY_DIMS)
    assert info.value.mismatched[0][0] == "encoder.conv2.bias"


# ---------------------------------------------------------------------------------------------- decode


def test_load_audio_16k_exact_int16(tmp_path):
    samples = (np.random.default_rng(2).integers(-32768, 32767, 4000)).astype(np.int16)
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    got = load_audio_16k(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, samples.astype(np.float32) / 32768)


def test_load_audio_16k_missing_file(tmp_path):
    from lipline.errors import MediaToolError

    with pytest.raises(MediaToolError, match="not found"):
        load_audio_16k(tmp_path / "nope.wav")


# ---------------------------------------------------------------------------------------------- golden


@pytest.fixture(scope="module")
def whisper_golden(conformance_dir):
    from safetensors.torch import load_file

    return load_file(str(conformance_dir / "whisper_golden.safetensors"))


@pytest.fixture(scope="module")
def reduced_encoder(conformance_dir):
    dims = json.loads((conformance_dir / "whisper_reduced_dims.json").read_text())
    return AudioEncoder.from_openai_checkpoint(conformance_dir / "whisper_reduced_encoder.safetensors", dims)


TOL = 1e-5  # manifest recommended_tolerances.whisper


@pytest.mark.conformance
def test_golden_short(conformance_dir, whisper_golden, reduced_encoder):
    g = whisper_golden
    assert torch.equal(mel_filters(), g["mel_filters"])
    waveform = load_audio_16k(conformance_dir / "audio_short.wav")
    np.testing.assert_array_equal(waveform, g["short.wav_int16"].numpy().astype(np.float32) / 32768)
    mel = reduced_encoder.log_mel(waveform)
    torch.testing.assert_close(mel, g["short.mel"], rtol=0, atol=TOL)
    feats = reduced_encoder.features(waveform)
    torch.testing.assert_close(feats, g["short.features"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(chunk_indices(feats.shape[0]), g["short.chunk_idx"].numpy())
    torch.testing.assert_close(feature_chunks(feats), g["short.chunks"], rtol=0, atol=TOL)


@pytest.mark.conformance
def test_golden_long_two_windows(conformance_dir, conformance_manifest, whisper_golden, reduced_encoder):
    g = whisper_golden
    info = conformance_manifest["files"]["whisper_golden.safetensors"]["long"]
    waveform = load_audio_16k(conformance_dir / "audio_long.flac")
    assert waveform.shape == (info["n_samples"],)
    mel = reduced_encoder.log_mel(waveform)
    assert list(mel.shape) == info["mel_shape"]
    torch.testing.assert_close(mel[:, :20], g["long.mel_cols_0_20"], rtol=0, atol=TOL)
    torch.testing.assert_close(mel[:, 2990:3010], g["long.mel_cols_2990_3010"], rtol=0, atol=TOL)
    torch.testing.assert_close(mel[:, -20:], g["long.mel_last20"], rtol=0, atol=TOL)
    feats = reduced_encoder.features_from_mel(mel)
    assert list(feats.shape) == info["features_shape"]
    torch.testing.assert_close(feats[:8], g["long.features_rows_0_8"], rtol=0, atol=TOL)
    torch.testing.assert_close(feats[1490:1510], g["long.features_rows_1490_1510"], rtol=0, atol=TOL)
    torch.testing.assert_close(feats[-8:], g["long.features_last8"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(chunk_indices(feats.shape[0]), g["long.chunk_idx"].numpy())
    chunks = feature_chunks(feats)
    assert chunks.shape[0] == info["n_chunks"]
    torch.testing.assert_close(chunks[info["chunks_sel_index"]], g["long.chunks_sel"], rtol=0, atol=TOL)
