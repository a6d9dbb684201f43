"""UNet3DConditionModel: config, module tree / key names, forward contract and DeepCache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.unet import DeepCacheState, UNet3DConditionModel, UNetOutput

FRAMES, SIDE = 4, 16


def _tiny_model(seed: int = 0) -> UNet3DConditionModel:
    """Tiny real model with every weight random (incl. the zero-initialised temporal proj_out)."""
    torch.manual_seed(seed)
    model = UNet3DConditionModel(UNet3DConfig.tiny()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "temporal_transformer.proj_out" in name:
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def tiny() -> UNet3DConditionModel:
    return _tiny_model()


def _inputs(batch: int = 2, frames: int = FRAMES, h: int = SIDE, w: int = SIDE, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, h, w, generator=g)
    audio = torch.randn(batch * frames, 50, 64, generator=g)
    return sample, audio


# ----------------------------------------------------------------------------- config
def test_default_config_is_official_stage2(conformance_dir: Path) -> None:
    official = json.loads((conformance_dir / "unet_full_state_dict_keys.json").read_text())["model_config"]
    assert UNet3DConfig().to_dict() == official
    assert UNet3DConfig.from_dict(official) == UNet3DConfig()


def test_tiny_config_equals_shared_json(conformance_dir: Path) -> None:
    shared = json.loads((conformance_dir / "unet_tiny_config.json").read_text())
    assert UNet3DConfig.tiny().to_dict() == shared
    assert UNet3DConfig.from_dict(shared) == UNet3DConfig.tiny()


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = UNet3DConfig.tiny()
    assert UNet3DConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="bogus_key"):
        UNet3DConfig.from_dict({**cfg.to_dict(), "bogus_key": 1})
    with pytest.raises(ValueError, match="bogus_mm"):
        UNet3DConfig(motion_module_kwargs={"bogus_mm": 1})


def test_config_validation_quotes_values() -> None:
    with pytest.raises(ValueError, match=r"3 entries.*4"):
        UNet3DConfig(down_block_types=("CrossAttnDownBlock3D",) * 3)
    with pytest.raises(ValueError, match=r"48.*32"):
        UNet3DConfig(block_out_channels=(32, 32, 48, 64))
    with pytest.raises(ValueError, match="Bogus"):
        UNet3DConfig(up_block_types=("UpBlock3D", "Bogus", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"))


# ----------------------------------------------------------------------------- module tree
def test_full_size_keys_shapes_and_param_count(conformance_dir: Path) -> None:
    reference = json.loads((conformance_dir / "unet_full_state_dict_keys.json").read_text())
    with torch.device("meta"):
        model = UNet3DConditionModel(UNet3DConfig())
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = {name: shape for name, shape, _kind in reference["state_dict"]}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert len(got) == reference["n_entries"] == 1246
    buffers = {name for name, _, kind in reference["state_dict"] if kind == "buffer"}
    assert {k for k, _ in model.named_buffers()} == buffers and len(buffers) == 40
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == reference["n_params"] == 1_267_099_844
    motion = sum(p.numel() for n, p in model.named_parameters() if "motion_modules." in n)
    audio = sum(p.numel() for n, p in model.named_parameters() if ".attn2." in n)
    assert (motion, audio) == (reference["n_params_motion_modules"], reference["n_params_audio_cross_attn_attn2"])


def test_tiny_keys_match_tiny_weights(conformance_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(conformance_dir / "unet_tiny_weights.safetensors"), "pt") as f:
        expected = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    with torch.device("meta"):
        model = UNet3DConditionModel(UNet3DConfig.tiny())
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(expected) == 1244
    assert got == expected


# ----------------------------------------------------------------------------- forward contract
def test_forward_shape_dtype_and_input_layouts(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs()
    with torch.no_grad():
        out = tiny(sample, 951, audio)
        assert isinstance(out, UNetOutput)
        assert out.sample.shape == (2, 4, FRAMES, SIDE, SIDE) and out.sample.dtype == torch.float32
        as_4d = tiny(sample, torch.tensor(951), audio.reshape(2, FRAMES, 50, 64)).sample
        one_elem = tiny(sample, torch.tensor([951]), audio).sample
        other_t = tiny(sample, 501, audio).sample
    torch.testing.assert_close(as_4d, out.sample, rtol=0, atol=0)
    torch.testing.assert_close(one_elem, out.sample, rtol=0, atol=0)
    assert (other_t - out.sample).abs().max() > 1e-3


def test_batch_elements_are_independent_and_audio_rows_batch_major(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs()
    with torch.no_grad():
        both = tiny(sample, 301, audio).sample
        second = tiny(sample[1:], 301, audio[FRAMES:]).sample
        no_audio = tiny(sample[1:], 301, None).sample
    torch.testing.assert_close(both[1:], second, rtol=1e-5, atol=1e-5)
    assert (no_audio - second).abs().max() > 1e-3


def test_frame_dependence_is_temporal_only_through_pooled_norms_and_motion(tiny: UNet3DConditionModel) -> None:
    # changing frame 3 must change frame 0's output (temporal attention + frame-pooled GroupNorm)
    sample, audio = _inputs(batch=1)
    changed = sample.clone()
    changed[:, :, 3] += 1.0
    with torch.no_grad():
        a = tiny(sample, 101, audio).sample
        b = tiny(changed, 101, audio).sample
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-4


def test_odd_latent_sides_resize_to_skip(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs(batch=1, frames=3, h=12, w=20)
    with torch.no_grad():
        out = tiny(sample, 11, audio).sample
    assert out.shape == (1, 4, 3, 12, 20)


def test_too_many_frames_for_position_table(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs(batch=1, frames=25, h=8, w=8)
    with pytest.raises(ValueError, match="25 frames"), torch.no_grad():
        tiny(sample, 1, audio)


def test_bad_audio_shape_raises(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs()
    with pytest.raises(ValueError, match="audio"), torch.no_grad():
        tiny(sample, 1, audio[:-1])


def test_channels_last_gives_same_output() -> None:
    model = _tiny_model()
    sample, audio = _inputs(batch=1)
    with torch.no_grad():
        ref = model(sample, 701, audio).sample
        model.to(memory_format=torch.channels_last)
        out = model(sample, 701, audio).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_bfloat16_runs_and_returns_input_dtype() -> None:
    model = _tiny_model()
    sample, audio = _inputs(batch=1)
    with torch.no_grad():
        ref = model(sample, 701, audio).sample
        model.to(torch.bfloat16)
        out = model(sample.bfloat16(), 701, audio.bfloat16()).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.25 * ref.abs().max()


# ----------------------------------------------------------------------------- DeepCache
def test_deepcache_cached_step_with_same_inputs_equals_full(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs()
    state = DeepCacheState(cache_interval=3)
    with torch.no_grad():
        full = tiny(sample, 951, audio).sample
        step0 = tiny(sample, 951, audio, deepcache=state, step_index=0).sample
        step1 = tiny(sample, 951, audio, deepcache=state, step_index=1).sample
    torch.testing.assert_close(step0, full, rtol=0, atol=0)
    torch.testing.assert_close(step1, full, rtol=1e-6, atol=1e-6)
    assert (state.full_steps, state.cached_steps) == (1, 1)


def test_deepcache_cached_step_matches_hand_built_cheap_path(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs()
    sample2 = sample + 0.1 * torch.randn_like(sample)
    last = tiny.up_blocks[3]
    captured: dict[str, torch.Tensor] = {}

    def grab(_module, args, _kwargs=None):
        captured["resnet2_in"] = args[0]

    handle = last.resnets[2].register_forward_pre_hook(grab)
    state = DeepCacheState()
    with torch.no_grad():
        tiny(sample, 951, audio, deepcache=state, step_index=0)
        handle.remove()
        cached = tiny(sample2, 901, audio, deepcache=state, step_index=1).sample
        full = tiny(sample2, 901, audio).sample

        # hand-built cheap path: fresh time embedding + conv_in, cached hidden, last layer, output head
        from lipline.models.latentsync.embeddings import timestep_sinusoid

        temb = tiny.time_embedding(timestep_sinusoid(torch.tensor([901, 901]), 32))
        h0 = tiny.conv_in(sample2)
        c_cached = captured["resnet2_in"].shape[1] - h0.shape[1]
        h = torch.cat([captured["resnet2_in"][:, :c_cached], h0], dim=1)
        h = last.resnets[2](h, temb)
        h = last.attentions[2](h, audio).sample
        h = last.motion_modules[2](h)
        ref = tiny.conv_out(torch.nn.functional.silu(tiny.conv_norm_out(h)))
    assert (cached - full).abs().max() > 1e-3
    torch.testing.assert_close(cached, ref, rtol=1e-6, atol=1e-6)


def test_deepcache_schedule_counter_and_reset(tiny: UNet3DConditionModel) -> None:
    sample, audio = _inputs(batch=1)
    state = DeepCacheState(cache_interval=3)
    with torch.no_grad():
        for j in range(7):
            tiny(sample, 1000 - 50 * j, audio, deepcache=state)  # internal counter = step index
        assert (state.full_steps, state.cached_steps) == (3, 4)
        state.reset()
        with pytest.raises(ValueError, match="no full step"):
            tiny(sample, 1, audio, deepcache=state, step_index=1)
        tiny(sample, 1, audio, deepcache=state, step_index=0)
        other, other_audio = _inputs(batch=2)
        with pytest.raises(ValueError, match="DeepCacheState"):
            tiny(other, 1, other_audio, deepcache=state, step_index=1)
    with pytest.raises(ValueError, match="cache_interval"):
        DeepCacheState(0)
