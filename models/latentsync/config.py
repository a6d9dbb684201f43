"""Configuration of the LatentSync 3D UNet (the YAML ``model:`` section of ``configs/unet/stage2*.yaml``).

Field names are exactly the official YAML keys so a ``model:`` section (or ``unet_tiny_config.json``) loads
with :meth:`UNet3DConfig.from_dict` and round-trips through :meth:`UNet3DConfig.to_dict`.
SPEC section 10.1 lists the values; ``attention_head_dim`` is the **number of heads** (pitfall 10.5.1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCK_TYPES = ("UpBlock3D", "CrossAttnUpBlock3D")
MID_BLOCK_TYPES = ("UNetMidBlock3DCrossAttn",)
MOTION_MODULE_TYPES = ("Vanilla",)
TEMPORAL_GROUPS = 32  # the temporal GroupNorm has 32 groups whatever norm_num_groups says (SPEC 10.3)


def default_motion_module_kwargs() -> dict[str, Any]:
    """Official ``motion_module_kwargs`` of stage2.yaml."""
    return {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
        "temporal_attention_dim_div": 1,
        "zero_initialize": True,
    }


MOTION_MODULE_KEYS = tuple(default_motion_module_kwargs())


@dataclass(frozen=True)
class UNet3DConfig:
    """Hyper-parameters of ``UNet3DConditionModel``; defaults = official stage2 / stage2_512 ``model:`` section."""

    act_fn: str = "silu"
    add_audio_layer: bool = True
    attention_head_dim: int = 8  # number of heads (head width = channels // 8)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    center_input_sample: bool = False  # no effect (SPEC 10.1)
    cross_attention_dim: int = 384
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
    mid_block_type: str = "UNetMidBlock3DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D")
    downsample_padding: int = 1
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    in_channels: int = 13
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1
    norm_eps: float = 1e-5
    norm_num_groups: int = 32
    out_channels: int = 4
    sample_size: int = 64  # no effect (SPEC 10.1)
    resnet_time_scale_shift: str = "default"
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: str = "Vanilla"
    motion_module_kwargs: dict[str, Any] = field(default_factory=default_motion_module_kwargs)

    def __post_init__(self) -> None:
        # Normalise list-valued fields to tuples (YAML/JSON give lists); values are not changed.
        for name in ("block_out_channels", "down_block_types", "up_block_types", "motion_module_resolutions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        kwargs = dict(self.motion_module_kwargs)
        unknown = sorted(set(kwargs) - set(MOTION_MODULE_KEYS))
        if unknown:
            raise ValueError(f"unknown motion_module_kwargs keys {unknown}; known: {list(MOTION_MODULE_KEYS)}")
        object.__setattr__(self, "motion_module_kwargs", {**default_motion_module_kwargs(), **kwargs})
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n:
            raise ValueError(f"down_block_types has {len(self.down_block_types)} entries but block_out_channels has {n}")
        if len(self.up_block_types) != n:
            raise ValueError(f"up_block_types has {len(self.up_block_types)} entries but block_out_channels has {n}")
        for kind in self.down_block_types:
            if kind not in DOWN_BLOCK_TYPES:
                raise ValueError(f"down block type {kind!r} is not one of {DOWN_BLOCK_TYPES}")
        for kind in self.up_block_types:
            if kind not in UP_BLOCK_TYPES:
                raise ValueError(f"up block type {kind!r} is not one of {UP_BLOCK_TYPES}")
        if self.mid_block_type not in MID_BLOCK_TYPES:
            raise ValueError(f"mid_block_type {self.mid_block_type!r} is not one of {MID_BLOCK_TYPES}")
        if self.act_fn != "silu":
            raise ValueError(f"act_fn {self.act_fn!r} is not supported (only 'silu')")
        if self.resnet_time_scale_shift != "default":
            raise ValueError(f"resnet_time_scale_shift {self.resnet_time_scale_shift!r} is not supported (only 'default')")
        if self.motion_module_type not in MOTION_MODULE_TYPES:
            raise ValueError(f"motion_module_type {self.motion_module_type!r} is not one of {MOTION_MODULE_TYPES}")
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        if not isinstance(self.attention_head_dim, int) or self.attention_head_dim < 1:
            raise ValueError(f"attention_head_dim (number of heads) must be a positive int, got {self.attention_head_dim!r}")
        heads_t = self.motion_module_kwargs["num_attention_heads"]
        div = self.motion_module_kwargs["temporal_attention_dim_div"]
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups:
                raise ValueError(f"block_out_channels entry {ch} is not divisible by norm_num_groups {self.norm_num_groups}")
            if ch % self.attention_head_dim:
                raise ValueError(f"block_out_channels entry {ch} is not divisible by attention_head_dim (heads) {self.attention_head_dim}")
            if self.use_motion_module:
                if ch % TEMPORAL_GROUPS:
                    raise ValueError(f"block_out_channels entry {ch} is not divisible by the temporal GroupNorm groups {TEMPORAL_GROUPS}")
                if ch % (heads_t * div):
                    raise ValueError(
                        f"block_out_channels entry {ch} is not divisible by temporal heads * dim_div {heads_t} * {div}"
                    )
        if self.use_motion_module:
            kinds = self.motion_module_kwargs["attention_block_types"]
            if any(k != "Temporal_Self" for k in kinds):
                raise ValueError(f"attention_block_types {kinds} not supported (only 'Temporal_Self')")
            if div != 1:
                raise ValueError(f"temporal_attention_dim_div {div} is not supported (only 1)")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNet3DConfig":
        """Build from an official YAML ``model:`` section; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNet3DConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the official key names (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def tiny(cls) -> "UNet3DConfig":
        """Reduced conformance model: official config with channels (32, 32, 32, 64) and audio width 64."""
        return cls(block_out_channels=(32, 32, 32, 64), cross_attention_dim=64)

    # ------------------------------------------------------------------ derived values
    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    def down_has_motion(self, i: int) -> bool:
        """Whether down block ``i`` carries temporal modules (resolution 2**i in ``motion_module_resolutions``)."""
        return self.use_motion_module and not self.motion_module_decoder_only and 2**i in self.motion_module_resolutions

    def up_has_motion(self, i: int) -> bool:
        """Whether up block ``i`` carries temporal modules (resolution 2**(n-1-i))."""
        n = len(self.block_out_channels)
        return self.use_motion_module and 2 ** (n - 1 - i) in self.motion_module_resolutions
