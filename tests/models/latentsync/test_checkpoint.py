"""Strict checkpoint loading, the official ``.pt`` format and the save_pretrained / from_pretrained round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lipline.errors import EngineError
from lipline.models.latentsync.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    load_unet_state_dict,
    read_official_unet_checkpoint,
)
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.unet import UNet3DConditionModel

PE_KEY = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"


def _random_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = UNet3DConditionModel(UNet3DConfig.tiny())
    return {k: (v + 0.01 * torch.randn_like(v)) if "pos_encoder" not in k else v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return _random_state_dict()


def _inputs():
    g = torch.Generator().manual_seed(5)
    return torch.randn(1, 13, 3, 16, 16, generator=g), torch.randn(3, 50, 64, generator=g)


def test_strict_load_of_shared_tiny_weights(conformance_dir: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(conformance_dir / "unet_tiny_weights.safetensors"))
    model = UNet3DConditionModel(UNet3DConfig.tiny())
    load_unet_state_dict(model, weights, source="unet_tiny_weights.safetensors")
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, weights[k].float()), k


def test_strict_load_copies_values(state_dict) -> None:
    model = UNet3DConditionModel(UNet3DConfig.tiny())
    load_unet_state_dict(model, state_dict)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state_dict[k]), k


@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape"])
def test_mismatch_raises_naming_the_key(state_dict, kind: str) -> None:
    bad = dict(state_dict)
    key = "up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0.weight"
    if kind == "missing":
        del bad[key]
    elif kind == "unexpected":
        key = "up_blocks.3.extra_layer.weight"
        bad[key] = torch.zeros(3)
    else:
        bad[key] = torch.zeros(5, 5)
    model = UNet3DConditionModel(UNet3DConfig.tiny())
    with pytest.raises(CheckpointMismatchError, match="latentsync_unet.pt") as info:
        load_unet_state_dict(model, bad, source="latentsync_unet.pt")
    message = str(info.value)
    assert key in message and {"missing": "1 missing", "unexpected": "1 unexpected", "shape": "1 with wrong shape"}[kind] in message
    assert isinstance(info.value, EngineError)


def test_missing_position_buffer_is_an_error(state_dict) -> None:
    bad = {k: v for k, v in state_dict.items() if k != PE_KEY}
    with pytest.raises(CheckpointMismatchError, match="pos_encoder.pe"):
        load_unet_state_dict(UNet3DConditionModel(UNet3DConfig.tiny()), bad)


def test_official_pt_format_loads_on_meta_without_leftovers(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": state_dict, "global_step": 1}, path)
    assert set(read_official_unet_checkpoint(path)) == set(state_dict)

    model = UNet3DConditionModel.from_official_checkpoint(path, config=UNet3DConfig.tiny())
    assert not model.training
    for k, v in model.state_dict().items():
        assert not v.is_meta and v.device.type == "cpu" and v.dtype == torch.float32
        assert torch.equal(v, state_dict[k]), k

    reference = UNet3DConditionModel(UNet3DConfig.tiny()).eval()
    load_unet_state_dict(reference, state_dict)
    sample, audio = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(sample, 5, audio).sample, reference(sample, 5, audio).sample, rtol=0, atol=0)

    half = UNet3DConditionModel.from_official_checkpoint(path, config=UNet3DConfig.tiny(), dtype=torch.float16)
    assert {v.dtype for v in half.state_dict().values()} == {torch.float16}


def test_official_pt_with_wrong_config_names_file(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": state_dict}, path)
    with pytest.raises(CheckpointMismatchError, match="latentsync_unet.pt"):
        UNet3DConditionModel.from_official_checkpoint(path)  # full-size default config


def test_safetensors_file_is_accepted(tmp_path: Path, state_dict) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    model = UNet3DConditionModel.from_official_checkpoint(path, config=UNet3DConfig.tiny())
    assert torch.equal(model.state_dict()[PE_KEY], state_dict[PE_KEY])


@pytest.mark.parametrize("payload", [{"weights": {}}, [1, 2, 3], {"state_dict": 5}])
def test_bad_pt_format_names_file(tmp_path: Path, payload) -> None:
    path = tmp_path / "not_a_unet.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointFormatError, match="not_a_unet.pt"):
        read_official_unet_checkpoint(path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFormatError, match="nowhere.pt"):
        read_official_unet_checkpoint(tmp_path / "nowhere.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointFormatError, match="corrupt.pt"):
        read_official_unet_checkpoint(corrupt)


def test_save_pretrained_round_trip(tmp_path: Path, state_dict) -> None:
    model = UNet3DConditionModel(UNet3DConfig.tiny()).eval()
    load_unet_state_dict(model, state_dict)
    out_dir = model.save_pretrained(tmp_path / "unet")
    assert {p.name for p in out_dir.iterdir()} == {"config.json", "model.safetensors"}
    loaded = UNet3DConditionModel.from_pretrained(out_dir)
    assert loaded.config == model.config
    loaded_sd = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded_sd[k], v), k
    sample, audio = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, 7, audio).sample, model(sample, 7, audio).sample, rtol=0, atol=0)
    with pytest.raises(CheckpointFormatError, match="config.json"):
        UNet3DConditionModel.from_pretrained(tmp_path / "empty")
