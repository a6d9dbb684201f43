"""Reduced-precision numerics of the LatentSync loop against float32, and host syncs inside the denoising loop.

Same inputs for every dtype: the conditioning latents (VAE posterior draws) and the initial noise are made once in
float32 and cast, so only the arithmetic differs, not the random draws. For each dtype the 20-step DDIM loop with
CFG and DeepCache runs on one 16-frame window of the full-size architecture (random weights), then the VAE decodes;
reported: max abs difference of the final latents (and relative to max |fp32|), PSNR of the decoded 8-bit frames,
against the tolerances below, one line per dtype (``numerics <version> <dtype>: ... PASS|FAIL``).

Tolerances (provisional, to be confirmed by the first GPU run; random weights amplify rounding more than trained
ones): fp16 latents relative max error <= 5e-2 and frames >= 30 dB; bf16 (3 fewer mantissa bits) <= 2e-1 and >= 24 dB.

On CUDA the loop also runs under ``torch.cuda.set_sync_debug_mode("warn")``: every synchronizing call (a host
round-trip) inside `denoise_block` is counted (``host syncs in the denoising loop: N``; the target is 0).
``--reduced`` (default without CUDA) runs the tiny config on the CPU, bf16 only (what the CPU supports), 4 steps.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for `bench.*`; appended, so an installed `lipline` wins over the source folder
    sys.path.append(str(REPO))

from bench.engine_throughput import DTYPES, FULL_VAE, TINY_VAE, build_unet, build_vae, synthetic_inputs  # noqa: E402
from bench.quality import psnr  # noqa: E402
from lipline.models.latentsync.config import UNet3DConfig  # noqa: E402
from lipline.models.latentsync.pipeline import denoise_block, pixels_to_uint8, prepare_block  # noqa: E402
from lipline.models.latentsync.scheduler import make_ddim_scheduler  # noqa: E402
from lipline.models.latentsync.unet import DeepCacheState  # noqa: E402
from lipline.models.latentsync.vae import decode as vae_decode  # noqa: E402
from lipline.models.latentsync.weights import version_spec  # noqa: E402

TOLERANCES = {"fp16": (5e-2, 30.0), "bf16": (2e-1, 24.0)}  # (latent relative max error, frame PSNR dB)


@torch.no_grad()
def run_loop(unet, vae, cond: list[torch.Tensor], noise: torch.Tensor, audio: torch.Tensor, steps: int,
             dtype: torch.dtype, count_syncs: bool) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Denoise one window in ``dtype`` and decode: (final latents fp32 ``[1, 4, f, h, w]``, uint8 frames, host syncs)."""
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(steps)
    args = [noise.to(dtype).clone(), *(c.to(dtype) for c in cond), audio.to(dtype)]
    syncs = None
    if count_syncs:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                latents = denoise_block(unet, scheduler, *args, deepcache=DeepCacheState(cache_interval=3))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
    else:
        latents = denoise_block(unet, scheduler, *args, deepcache=DeepCacheState(cache_interval=3))
    frames = pixels_to_uint8(vae_decode(vae, latents[0].permute(1, 0, 2, 3))).cpu()  # [4, f, h, w] -> [f, 4, h, w] -> [f, 3, R, R]
    return latents.float().cpu(), frames, syncs


def check(version: str, full: bool, device: torch.device, dtypes: list[str], steps: int) -> list[str]:
    """Run fp32 and each reduced dtype on the same inputs; one result line per dtype."""
    config = UNet3DConfig() if full else UNet3DConfig.tiny()
    resolution = version_spec(version).resolution if full else version_spec(version).resolution // 4
    torch.manual_seed(0)
    unet = build_unet(config, device, torch.float32)
    vae = build_vae(FULL_VAE if full else TINY_VAE, device, torch.float32)
    faces, audio, mask = synthetic_inputs(16, resolution, config.cross_attention_dim)
    g = torch.Generator(device=device).manual_seed(1247)
    noise = torch.randn((1, 4, 1, resolution // 8, resolution // 8), generator=g, device=device).expand(1, 4, 16, resolution // 8, resolution // 8)
    with torch.no_grad():
        block = prepare_block(vae, faces, mask, generator=g, dtype=torch.float32, device=device)
    cond = [block.mask_latents, block.masked_image_latents, block.ref_latents]
    audio = audio.to(device)[None]  # [1, 16, 50, D]
    ref_lat, ref_frames, _ = run_loop(unet, vae, cond, noise, audio, steps, torch.float32, False)
    lines = []
    for name in dtypes:
        tol_rel, tol_db = TOLERANCES[name]
        try:
            lat, frames, syncs = run_loop(copy.deepcopy(unet).to(DTYPES[name]), copy.deepcopy(vae).to(DTYPES[name]), cond, noise,
                                          audio, steps, DTYPES[name], device.type == "cuda")
        except RuntimeError as exc:  # e.g. an op without a kernel for this dtype on this device
            lines.append(f"numerics {version} {name}: not run on {device.type} ({str(exc).splitlines()[0][:120]})")
            continue
        max_abs = float((lat - ref_lat).abs().max())
        rel = max_abs / max(float(ref_lat.abs().max()), 1e-12)
        db = psnr(frames.numpy(), ref_frames.numpy())
        ok = rel <= tol_rel and db >= tol_db
        lines.append(f"numerics {version} {resolution}px {name} vs fp32 ({steps} DDIM steps, CFG 1.5, DeepCache, 16 frames): "
                     f"latents max abs {max_abs:.3g} (relative {rel:.3g}, tolerance {tol_rel:g}), frames PSNR {db:.2f} dB "
                     f"(tolerance >= {tol_db:g}) {'PASS' if ok else 'FAIL'}")
        if syncs is not None:
            lines.append(f"host syncs in the denoising loop ({version} {name}): {syncs}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reduced", action="store_true", help="tiny config on the CPU (default without CUDA)")
    ap.add_argument("--versions", default="1.5,1.6")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (20 full, 4 reduced)")
    ap.add_argument("--out", default="", help="markdown file to append the lines to ('' = none)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    full = cuda and not args.reduced
    device = torch.device("cuda" if full else "cpu")
    dtypes = ["fp16", "bf16"] if device.type == "cuda" else ["bf16"]
    steps = args.steps or (20 if full else 4)
    lines = []
    if not full:
        lines.append("numerics: REDUCED RUN on CPU (tiny architecture, bf16 only): checks the code path, not GPU numerics")
    for version in args.versions.split(","):
        lines += check(version.strip(), full, device, dtypes, steps)
    text = "\n".join(f"- {line}" for line in lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(f"\n### CUDA numerics (bench/gpu_numerics.py)\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
