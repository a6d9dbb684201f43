"""A loaded LatentSync release: UNet, VAE, whisper audio encoder, DDIM scheduler, mask, and where they came from.

`LatentSyncModel.from_pretrained` reads the official files found by `weights.resolve` strictly through the
component loaders (`UNet3DConditionModel.from_official_checkpoint`, `AudioEncoder.from_openai_checkpoint`,
`load_vae`, `make_ddim_scheduler`, `load_mask`); `from_components` assembles one from objects (tests, benches).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lipline.errors import EngineError

from .weights import ResolvedWeights, resolve, version_spec


@dataclass
class LatentSyncModel:
    unet: Any  # UNet3DConditionModel
    vae: Any  # diffusers AutoencoderKL
    audio_encoder: Any  # AudioEncoder (whisper, float32, CPU by default)
    scheduler: Any  # DDIMScheduler
    mask: torch.Tensor  # float64 [3, R, R], 1 = keep, 0 = regenerate
    version: str
    resolution: int
    provenance: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, version: str = "1.5", cache_dir: str | os.PathLike | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        mask_path: str | os.PathLike | None = None, *, unet_config: Any = None,
                        resolved: ResolvedWeights | None = None, hash_files: bool = True) -> "LatentSyncModel":
        """Load release ``version`` ("1.5" -> 256 px, "1.6" -> 512 px) from the local Hugging Face cache.

        ``device``/``dtype`` apply to the UNet and VAE (whisper stays float32 on CPU, as in the official run).
        ``unet_config`` defaults to the official config (reduced models pass theirs). Raises `WeightsNotFound`
        when files are missing and `EngineError` when components do not fit. Without a mask file (``mask_path``,
        ``LIPLINE_LATENTSYNC_MASK`` or the snapshot) the generated mask is used. ``provenance`` records the
        version, Hub commits, paths, (``hash_files``) the SHA-256 of every file, and under ``"mask"`` which mask
        was used: ``{"source": "generated", ...}`` or ``{"source": "file", "path": ..., "sha256": ...}``.
        """
        from .audio import AudioEncoder
        from .mask import load_mask
        from .scheduler import make_ddim_scheduler
        from .unet import UNet3DConditionModel
        from .vae import load_vae

        t0 = time.perf_counter()
        rw = resolved if resolved is not None else resolve(version, cache_dir, mask_path=mask_path)
        from .smoke import smoke_marker

        smoke = smoke_marker(rw.unet_path)
        if unet_config is None and smoke is not None:
            from .config import UNet3DConfig

            unet_config = UNet3DConfig.from_dict(smoke["unet_config"])
        unet = UNet3DConditionModel.from_official_checkpoint(rw.unet_path, config=unet_config, dtype=dtype, device=device)
        audio_encoder = AudioEncoder.from_openai_checkpoint(str(rw.whisper_path))
        vae = load_vae(rw.vae_dir, dtype=dtype)
        if device is not None:
            vae = vae.to(device=device)
        scheduler = make_ddim_scheduler()
        mask = load_mask(rw.mask_path, rw.resolution)  # None -> the generated mask
        provenance = rw.provenance(hashes=hash_files)
        provenance["smoke_model"] = smoke is not None
        provenance["load_s"] = round(time.perf_counter() - t0, 3)
        model = cls(unet=unet, vae=vae, audio_encoder=audio_encoder, scheduler=scheduler, mask=mask,
                    version=rw.version, resolution=rw.resolution, provenance=provenance)
        model.check()
        return model

    @classmethod
    def from_components(cls, unet: Any, vae: Any, audio_encoder: Any = None, scheduler: Any = None,
                        mask: torch.Tensor | None = None, *, version: str = "custom", resolution: int | None = None,
                        provenance: dict[str, Any] | None = None) -> "LatentSyncModel":
        """Assemble from objects. ``scheduler`` defaults to the official DDIM; ``resolution`` to the version's
        (or the mask's side); ``mask`` defaults to "regenerate the lower half" (a stand-in, not the official mask)."""
        if resolution is None:
            if mask is not None:
                resolution = int(mask.shape[-1])
            elif version in ("1.5", "1.6"):
                resolution = version_spec(version).resolution
            else:
                raise EngineError("from_components needs resolution= (or a mask, or version '1.5'/'1.6')")
        if scheduler is None:
            from .scheduler import make_ddim_scheduler

            scheduler = make_ddim_scheduler()
        if mask is None:
            mask = torch.ones(3, resolution, resolution, dtype=torch.float64)
            mask[:, resolution // 2:, :] = 0
        model = cls(unet=unet, vae=vae, audio_encoder=audio_encoder, scheduler=scheduler, mask=mask.to(torch.float64),
                    version=version, resolution=int(resolution), provenance=dict(provenance or {"source": "components"}))
        model.check()
        return model

    # ------------------------------------------------------------------ use
    def check(self) -> None:
        """Components fit together: mask side = resolution, whisper width = UNet cross-attention width."""
        if tuple(self.mask.shape) != (3, self.resolution, self.resolution):
            raise EngineError(f"mask shape {tuple(self.mask.shape)} does not match resolution {self.resolution}")
        cfg = getattr(self.unet, "config", None)
        cad = getattr(cfg, "cross_attention_dim", None)
        dims = getattr(self.audio_encoder, "dims", None)
        if cad is not None and dims and int(dims.get("n_audio_state", cad)) != int(cad):
            raise EngineError(f"whisper width {dims['n_audio_state']} does not match the UNet cross_attention_dim {cad}")

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LatentSyncModel":
        """Move/cast UNet and VAE in place (whisper stays where it is); returns self."""
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        return self

    def audio_chunks(self, waveform: Any, fps: float = 25.0) -> torch.Tensor:
        """16 kHz waveform -> per-video-frame whisper chunks ``[N, 50, d]`` (float32, CPU)."""
        if self.audio_encoder is None:
            raise EngineError("this LatentSyncModel has no audio encoder")
        from .audio import feature_chunks

        return feature_chunks(self.audio_encoder.features(waveform), fps=fps)

    def pipeline(self, scheduler: str = "ddim") -> Any:
        """A `LatentSyncPipeline` over this model's UNet and VAE: its DDIM scheduler (``"ddim"``, official) or a
        fresh DPM-Solver++ (``"dpmpp"``, optional faster sampler; see `scheduler.make_scheduler`)."""
        from .pipeline import LatentSyncPipeline
        from .scheduler import make_scheduler

        return LatentSyncPipeline(self.unet, self.vae, self.scheduler if scheduler == "ddim" else make_scheduler(scheduler))


__all__ = ["LatentSyncModel"]
