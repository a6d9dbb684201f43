"""Strict loading of LatentSync UNet weights: the official ``latentsync_unet.pt`` and our own save format.

The official loader is non-strict (SPEC section 1); here every key must be present, none extra, shapes equal,
so a wrong config or a truncated file fails loudly with the keys named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lipline.errors import EngineError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_SHOW = 5  # keys listed per category in error messages


class CheckpointMismatchError(EngineError):
    """A state dict does not match the model: lists missing, unexpected and shape-mismatched keys."""

    def __init__(
        self,
        source: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.source, self.missing, self.unexpected, self.mismatched = source, missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:_SHOW])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:_SHOW])})")
        if mismatched:
            shown = ", ".join(f"{k}: checkpoint {list(got)} vs model {list(want)}" for k, got, want in mismatched[:_SHOW])
            parts.append(f"{len(mismatched)} with wrong shape (e.g. {shown})")
        super().__init__(
            f"{source}: checkpoint does not match the UNet config: " + "; ".join(parts)
            + ". Check that the config matches the checkpoint (official stage2 model section for LatentSync 1.5/1.6)."
        )


class CheckpointFormatError(EngineError):
    """The file is not a UNet checkpoint we can read (names the file and what was found)."""


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = list(obj)[:8]
        return f"a dict with keys {keys}{' ...' if len(obj) > 8 else ''}"
    return f"a {type(obj).__name__}"


def read_official_unet_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``latentsync_unet.pt`` (``torch.load(...)["state_dict"]``) or a ``.safetensors`` file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFormatError(f"{path}: UNet checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointFormatError(f"{path}: cannot read safetensors file: {exc}") from exc
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointFormatError(f"{path}: cannot read as a torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointFormatError(
            f"{path}: expected the official LatentSync format, a dict with a 'state_dict' entry; found {_describe(ckpt)}"
        )
    state_dict = ckpt["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointFormatError(f"{path}: 'state_dict' entry is not a name -> tensor mapping ({_describe(state_dict)})")
    return state_dict


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` unless keys and shapes equal ``model.state_dict()`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)


def load_unet_state_dict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    source: str = "<state_dict>",
    device: torch.device | str | None = None,
) -> None:
    """Strictly load ``state_dict`` into ``model``, casting to the model's dtypes.

    A model built on the meta device gets the tensors assigned (no second allocation); its target dtype is the
    meta tensors' dtype and its device ``device`` (default: where the given tensors are). A materialised model
    keeps its device and ``device`` is ignored.
    """
    check_state_dict(model, state_dict, source)
    expected = model.state_dict()
    if any(t.is_meta for t in expected.values()):
        cast = {k: v.to(device=device if device is not None else v.device, dtype=expected[k].dtype) for k, v in state_dict.items()}
        model.load_state_dict(cast, strict=True, assign=True)
    else:
        with torch.no_grad():
            model.load_state_dict(state_dict, strict=True)  # copy_ casts dtype and device


def save_model(model: nn.Module, config: dict[str, Any], directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created); returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def read_pretrained(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read what :func:`save_model` wrote: (config dict, state dict)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointFormatError(f"{p}: missing; expected a directory written by save_pretrained")
    return json.loads(config_path.read_text()), load_file(str(weights_path), device="cpu")
