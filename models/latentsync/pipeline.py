"""LatentSync sampling loop on aligned faces (SPEC sections 5.2, 6, 7, 8, 9.1-9.2).

Inputs are tensors (aligned ``R x R`` faces, per-frame whisper chunks, the fixed mask); media I/O, face
alignment and paste-back into the source frames live elsewhere. The loop is written out, step by step:

1. draw the initial noise ``randn(1, 4, 1, R/8, R/8)`` once and share it by every frame;
2. for each window of ``window`` (16) frames, in order: mask latents, masked-image latents (posterior sample),
   reference latents (posterior sample) -- the RNG order of the official pipeline;
3. DDIM over the timesteps with classifier-free guidance (zero audio first) and optional DeepCache;
4. decode, paste the unmasked pixels back, move the window's result to the CPU.

RNG: the official code seeds the *global* generators and never passes a generator. Here a dedicated
`torch.Generator` on the working device, seeded with ``seed``, yields the same stream as
``torch.manual_seed(seed)`` followed by global draws, without touching global state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .mask import mask_latents as make_mask_latents
from .vae import decode as vae_decode
from .vae import encode_sample

LATENT_CHANNELS = 4
VAE_STRIDE = 8


@dataclass
class LatentSyncOutput:
    """Result of `LatentSyncPipeline.generate`.

    Attributes:
        faces: uint8 ``[N, 3, R, R]`` on CPU: generated lower face pasted into the original aligned face.
        faces_float: float32 ``[N, 3, R, R]`` on CPU in about [-1, 1] (not clamped), the tensor the official
            paste-back into the source frame consumes (SPEC 9.3); only with ``return_float=True``.
        final_latents: per window, ``[1, 4, f, R/8, R/8]`` on CPU in the working dtype after the last DDIM step;
            only with ``return_latents=True``.
        seed: the seed actually used.
    """

    faces: torch.Tensor
    faces_float: torch.Tensor | None = None
    final_latents: list[torch.Tensor] = field(default_factory=list)
    seed: int | None = None


@dataclass
class BlockConditioning:
    """Per-window conditioning tensors (SPEC 6.2), each on the working device in the working dtype.

    Attributes:
        mask_latents: ``[1, 1, f, h, w]`` (nearest-resized mask channel 0).
        masked_image_latents: ``[1, 4, f, h, w]`` scaled VAE posterior sample of ``pixel * mask``.
        ref_latents: ``[1, 4, f, h, w]`` scaled VAE posterior sample of ``pixel``.
        pixels: ``[f, 3, R, R]`` float32 reference pixels in [-1, 1] (for the paste of SPEC 9.2).
        mask_1ch: ``[f, 1, R, R]`` float mask channel 0 (1 = keep).
    """

    mask_latents: torch.Tensor
    masked_image_latents: torch.Tensor
    ref_latents: torch.Tensor
    pixels: torch.Tensor
    mask_1ch: torch.Tensor


def faces_to_pixels(faces: torch.Tensor) -> torch.Tensor:
    """uint8 faces ``[f, 3, R, R]`` -> float32 pixels in [-1, 1]: ``(x / 255 - 0.5) / 0.5`` (SPEC 5.2)."""
    return (faces / 255.0 - 0.5) / 0.5


def pixels_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> uint8 ``(x / 2 + 0.5).clamp(0, 1) * 255`` truncated (the official uint8 conversion)."""
    return ((pixels / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)


def prepare_block(vae, faces: torch.Tensor, mask: torch.Tensor, *, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device) -> BlockConditioning:
    """Mask / masked-image / reference latents for one window, drawing in the official order (SPEC 5.2, 6.2).

    Args:
        faces: uint8 ``[f, 3, R, R]`` aligned faces of the window.
        mask: float64 ``[3, R, R]`` fixed mask (1 = keep).
        generator: RNG for the two posterior draws ``randn(f, 4, R/8, R/8)`` (masked first, then reference).
    """
    f, _, height, width = faces.shape
    pixels = faces_to_pixels(faces.to(device))  # [f, 3, R, R] float32
    mask = mask.to(device)
    masked = pixels * mask  # float64: the mask is float64 (SPEC 10.5.10)
    mask_1ch = mask[0:1].expand(f, 1, height, width)  # [f, 1, R, R]
    latent_hw = (height // VAE_STRIDE, width // VAE_STRIDE)

    mask_lat = make_mask_latents(mask, f, latent_hw, dtype=dtype, device=device)  # [1, 1, f, h, w]
    masked_lat = encode_sample(vae, masked.to(dtype), generator=generator)  # [f, 4, h, w]
    ref_lat = encode_sample(vae, pixels.to(dtype), generator=generator)  # [f, 4, h, w]
    # [f, 4, h, w] -> [1, 4, f, h, w]
    masked_lat = masked_lat.to(dtype).permute(1, 0, 2, 3).unsqueeze(0)
    ref_lat = ref_lat.to(dtype).permute(1, 0, 2, 3).unsqueeze(0)
    return BlockConditioning(mask_lat, masked_lat, ref_lat, pixels, mask_1ch)


def denoise_block(
    unet,
    scheduler,
    latents: torch.Tensor,
    mask_latents: torch.Tensor,
    masked_image_latents: torch.Tensor,
    ref_latents: torch.Tensor,
    audio: torch.Tensor | None,
    *,
    guidance_scale: float = 1.5,
    deepcache=None,
    timesteps: Sequence | torch.Tensor | None = None,
    step_callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DDIM loop (eta 0; or DPM-Solver++) for ``B`` windows of the same length, batched (SPEC 7, 8).

    Args:
        unet: `UNet3DConditionModel` (or anything with its call signature).
        scheduler: `DDIMScheduler` (or `DPMSolverMultistepScheduler`, reset here) with ``set_timesteps`` already
            called; ``step`` receives python-int timesteps.
        latents: ``[B, 4, f, h, w]`` initial noisy latents.
        mask_latents: ``[B, 1, f, h, w]``.
        masked_image_latents: ``[B, 4, f, h, w]``.
        ref_latents: ``[B, 4, f, h, w]``.
        audio: ``[B, f, 50, D]`` (or ``[f, 50, D]`` when B = 1) audio chunks, or None (no cross-attention).
        guidance_scale: CFG scale; ``> 1`` doubles the UNet batch as ``[zero audio (B), audio (B)]``.
        deepcache: a `DeepCacheState` (reset here) or None.
        timesteps: defaults to ``scheduler.timesteps``; step index = position in this list.
        step_callback: ``fn(step_index, t, latents)`` after every step (``t`` a python int).

    Returns:
        ``[B, 4, f, h, w]`` latents after the last step.
    """
    if hasattr(scheduler, "model_outputs"):  # multistep solver (DPM-Solver++): forget the previous block's history
        scheduler.set_timesteps(scheduler.num_inference_steps)
    if timesteps is None:
        timesteps = scheduler.timesteps
    # No host round-trip inside the loop: the scheduler gets python ints (its coefficient tables live on the CPU,
    # DDIM's `prev_timestep >= 0` and DPM-Solver's index lookup stay host-side), the UNet gets a view of one device
    # tensor built here once (a python int would be copied host -> device every step).
    steps = [int(t) for t in timesteps]
    t_device = torch.tensor(steps, dtype=torch.long, device=latents.device)  # [S]
    b, _, f, h, w = latents.shape
    do_cfg = guidance_scale > 1.0
    if audio is not None:
        if audio.ndim == 3:
            audio = audio.unsqueeze(0)  # [f, 50, D] -> [1, f, 50, D]
        if audio.shape[:2] != (b, f):
            raise ValueError(f"audio batch/frames {tuple(audio.shape[:2])} do not match latents {(b, f)}")
        audio = audio.to(device=latents.device, dtype=latents.dtype)
        if do_cfg:
            audio = torch.cat([torch.zeros_like(audio), audio])  # [2B, f, 50, D], unconditional first
        audio = audio.reshape(-1, *audio.shape[2:])  # [B', f, 50, D] -> [B' * f, 50, D] (batch-major)
    cond = torch.cat([mask_latents, masked_image_latents, ref_latents], dim=1)  # [B, 9, f, h, w]
    if do_cfg:
        cond = torch.cat([cond, cond])  # [2B, 9, f, h, w]
    if deepcache is not None:
        deepcache.reset()

    for step_index, t in enumerate(steps):
        x = torch.cat([latents, latents]) if do_cfg else latents  # [B', 4, f, h, w]
        unet_input = torch.cat([x, cond], dim=1)  # [B', 13, f, h, w]
        noise_pred = unet(unet_input, t_device[step_index], encoder_hidden_states=audio, deepcache=deepcache, step_index=step_index).sample
        if do_cfg:
            noise_uncond, noise_audio = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_audio - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents).prev_sample
        if step_callback is not None:
            step_callback(step_index, t, latents)
    return latents


class LatentSyncPipeline:
    """LatentSync inference on aligned faces.

    Args:
        unet: `lipline.models.latentsync.unet.UNet3DConditionModel`.
        vae: `diffusers.AutoencoderKL` (scaling 0.18215, shift 0 forced).
        scheduler: `diffusers.DDIMScheduler` from `make_ddim_scheduler()` (official), or the DPM-Solver++ of
            `make_dpmpp_scheduler()` (optional faster sampler, e.g. 10 steps).
    """

    def __init__(self, unet, vae, scheduler) -> None:
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler

    # ---- step 0: inputs ---------------------------------------------------------------------------

    @staticmethod
    def check_inputs(faces: torch.Tensor, audio_chunks: torch.Tensor, mask: torch.Tensor, window: int, window_batch: int, num_inference_steps: int) -> None:
        if faces.ndim != 4 or faces.shape[1] != 3 or faces.dtype != torch.uint8:
            raise ValueError(f"faces must be uint8 [N, 3, R, R], got {faces.dtype} {tuple(faces.shape)}")
        n, _, height, width = faces.shape
        if height != width or height % VAE_STRIDE:
            raise ValueError(f"faces must be square with a side divisible by {VAE_STRIDE}, got {height}x{width}")
        if n == 0:
            raise ValueError("faces is empty (N = 0)")
        if audio_chunks.ndim != 3 or audio_chunks.shape[0] != n:
            raise ValueError(f"audio_chunks must be [N, 50, D] with N = {n} (faces), got {tuple(audio_chunks.shape)}")
        if tuple(mask.shape) != (3, height, width):
            raise ValueError(f"mask must be [3, {height}, {width}] (face resolution), got {tuple(mask.shape)}")
        if not 1 <= window <= 24:
            raise ValueError(f"window must be in 1..24 (temporal table length), got {window}")
        if window_batch < 1:
            raise ValueError(f"window_batch must be >= 1, got {window_batch}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")

    def _resolve_device_dtype(self, device, dtype) -> tuple[torch.device, torch.dtype]:
        param = next(self.unet.parameters())
        device = torch.device(device) if device is not None else param.device
        dtype = dtype or param.dtype
        if param.device != device or param.dtype != dtype:
            self.unet.to(device=device, dtype=dtype)
        vae_param = next(self.vae.parameters())
        if vae_param.device != device or vae_param.dtype != dtype:
            self.vae.to(device=device, dtype=dtype)
        return device, dtype

    # ---- main entry --------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        faces: torch.Tensor,
        audio_chunks: torch.Tensor,
        mask: torch.Tensor,
        *,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.5,
        deepcache: bool = True,
        seed: int | None = 1247,
        window: int = 16,
        window_batch: int = 1,
        vae_slicing: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        progress: Callable[[int, int], None] | None = None,
        return_float: bool = False,
        return_latents: bool = False,
        init_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LatentSyncOutput:
        """Generate lip-synced faces.

        Args:
            faces: uint8 ``[N, 3, R, R]`` aligned faces on CPU (already looped/trimmed to N = number of chunks).
            audio_chunks: ``[N, 50, D]`` per-frame whisper chunks (`feature_chunks`).
            mask: float64 ``[3, R, R]`` fixed mask, 1 = keep (`load_mask`).
            num_inference_steps: sampler steps (20 for the official DDIM).
            guidance_scale: CFG scale; exactly 1.0 (or less) runs one conditional pass per step.
            deepcache: reuse deep UNet features every 3 steps (DeepCache, SPEC 8).
            seed: RNG seed (official default 1247); None draws a random seed (returned in the output).
            window: frames per denoising block (16, official).
            window_batch: windows run together in one UNet batch (same results, more memory).
            vae_slicing: decode one frame at a time.
            dtype: working dtype (default: the UNet's dtype); the UNet and VAE are cast if needed.
            device: working device (default: the UNet's device); the UNet and VAE are moved if needed.
            progress: ``fn(done_frames, total_frames)`` after each finished window group.
            return_float: also return the float faces (input of the official paste-back, SPEC 9.3).
            return_latents: also return each window's final latents.
            init_noise: override the initial noise draw ``[1, 4, 1, R/8, R/8]``; no draw is made then.
            generator: continue this RNG instead of seeding a new one (``seed`` is then only reported): a video
                engine feeding a long segment window group by window group passes the same generator and the
                first call's ``init_noise`` to every call, which reproduces one call over all frames exactly.

        Returns:
            `LatentSyncOutput` with ``faces`` uint8 ``[N, 3, R, R]`` on CPU.
        """
        # 0. Check inputs, resolve device / dtype / seed
        self.check_inputs(faces, audio_chunks, mask, window, window_batch, num_inference_steps)
        device, dtype = self._resolve_device_dtype(device, dtype)
        if seed is None:
            seed = secrets.randbits(63)
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(seed)
        n, _, height, width = faces.shape
        latent_hw = (height // VAE_STRIDE, width // VAE_STRIDE)

        # 1. Timesteps
        self.scheduler.set_timesteps(num_inference_steps)  # timesteps stay on the CPU (see denoise_block)
        timesteps = self.scheduler.timesteps

        # 2. Initial noise: one draw shared by every frame (SPEC 6.1)
        if init_noise is None:
            init_noise = torch.randn((1, LATENT_CHANNELS, 1, *latent_hw), generator=generator, device=device, dtype=dtype)
        init_noise = init_noise.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma  # [1, 4, 1, h, w]

        cache_state = None
        if deepcache:
            from .unet import DeepCacheState

            cache_state = DeepCacheState(cache_interval=3)

        # 3. Windows of `window` frames; groups of equal-length windows share a UNet batch
        starts = list(range(0, n, window))
        groups: list[list[int]] = []
        for start in starts:
            length = min(window, n - start)
            if groups and len(groups[-1]) < window_batch and min(window, n - groups[-1][0]) == length:
                groups[-1].append(start)
            else:
                groups.append([start])

        out_faces = torch.empty((n, 3, height, width), dtype=torch.uint8)
        out_float = torch.empty((n, 3, height, width), dtype=torch.float32) if return_float else None
        final_latents: list[torch.Tensor] = []
        done = 0
        for group in groups:
            f = min(window, n - group[0])
            # 3a. conditioning per window, in the official RNG order (masked then reference, window by window)
            blocks = [prepare_block(self.vae, faces[s : s + f], mask, generator=generator, dtype=dtype, device=device) for s in group]
            latents = init_noise.expand(len(group), LATENT_CHANNELS, f, *latent_hw).contiguous()  # [B, 4, f, h, w]
            audio = torch.stack([audio_chunks[s : s + f] for s in group])  # [B, f, 50, D]

            # 3b. denoise
            latents = denoise_block(
                self.unet,
                self.scheduler,
                latents,
                torch.cat([b.mask_latents for b in blocks]),
                torch.cat([b.masked_image_latents for b in blocks]),
                torch.cat([b.ref_latents for b in blocks]),
                audio,
                guidance_scale=guidance_scale,
                deepcache=cache_state,
                timesteps=timesteps,
            )

            # 3c. decode and paste the unmasked pixels back (SPEC 9.1, 9.2), window by window
            for i, (start, block) in enumerate(zip(group, blocks)):
                window_latents = latents[i : i + 1]  # [1, 4, f, h, w]
                if return_latents:
                    final_latents.append(window_latents.cpu())
                decoded = vae_decode(self.vae, window_latents[0].permute(1, 0, 2, 3), slicing=vae_slicing)  # [4, f, h, w] -> [f, 4, h, w] -> [f, 3, R, R]
                m = block.mask_1ch.to(dtype)  # [f, 1, R, R]
                pasted = decoded * (1 - m) + block.pixels.to(dtype) * m  # [f, 3, R, R]
                out_faces[start : start + f] = pixels_to_uint8(pasted).cpu()
                if out_float is not None:
                    out_float[start : start + f] = pasted.float().cpu()
            done += f * len(group)
            del blocks, latents
            if progress is not None:
                progress(done, n)

        return LatentSyncOutput(faces=out_faces, faces_float=out_float, final_latents=final_latents, seed=seed)


__all__ = ["BlockConditioning", "LatentSyncOutput", "LatentSyncPipeline", "denoise_block", "faces_to_pixels", "pixels_to_uint8", "prepare_block"]
