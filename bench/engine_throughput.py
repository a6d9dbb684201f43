"""LatentSync engine throughput: model seconds per 10 s of 25 fps video, peak VRAM and model FLOPs utilisation.

Full-size architecture (official UNet3DConfig + the sd-vae-ft-mse AutoencoderKL layout) with **random weights**
(no checkpoint needed: speed and memory do not depend on the values). For each release (1.5 -> 256 px,
1.6 -> 512 px), dtype and DeepCache setting it times `LatentSyncPipeline.generate` on ``--frames`` aligned faces
(default 250 = 10 s at 25 fps; other counts are scaled to 250), after one untimed warm-up window.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``: one full UNet step (CFG batch, 16 frames),
and one whole 16-frame window (VAE encode/decode, all UNet steps with DeepCache as configured); MFU = counted
FLOPs of the run / seconds / the device's dense fp16/bf16 peak from a small table (unknown device -> n/a).

Without CUDA it runs the tiny config (`UNet3DConfig.tiny()`, a small VAE) on a few frames as a smoke run of
this script, and says so: those numbers say nothing about GPU throughput.

    python bench/engine_throughput.py                      # GPU: both releases, fp16+bf16, DeepCache on+off
    python bench/engine_throughput.py --versions 1.6 --dtypes fp16 --deepcache on --frames 64
    python bench/engine_throughput.py --tiny --frames 8    # CPU smoke
    python bench/engine_throughput.py --video [...]        # the whole video engine: bench/video_engine.py

Results are APPENDED to ``--out`` (bench/RESULTS.md) as a markdown block: command, machine, date, table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lipline.models.latentsync.config import UNet3DConfig  # noqa: E402
from lipline.models.latentsync.pipeline import LatentSyncPipeline  # noqa: E402
from lipline.models.latentsync.scheduler import make_ddim_scheduler  # noqa: E402
from lipline.models.latentsync.unet import UNet3DConditionModel  # noqa: E402
from lipline.models.latentsync.weights import version_spec  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Dense (no sparsity) fp16/bf16 tensor-core peak, TFLOP/s, matched on the CUDA device name (first match wins).
PEAK_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0), ("A100", 312.0), ("L40S", 362.0),
    ("L40", 181.0), ("L4", 121.0), ("RTX 4090", 165.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 3090", 71.0),
]
FULL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512)
TINY_VAE = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=64)
VIDEO_FRAMES = 250  # 10 s at 25 fps


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def build_vae(kwargs: dict, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", latent_channels=4, **kwargs)
    return vae.to(device=device, dtype=dtype).eval()


def build_unet(config: UNet3DConfig, device: torch.device, dtype: torch.dtype) -> UNet3DConditionModel:
    with torch.device(device):
        unet = UNet3DConditionModel(config)
    return unet.to(dtype=dtype).eval()


def synthetic_inputs(frames: int, resolution: int, width: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, (frames, 3, resolution, resolution), generator=g, dtype=torch.uint8)
    audio = torch.randn(frames, 50, width, generator=g)
    mask = torch.ones(3, resolution, resolution, dtype=torch.float64)
    mask[:, resolution // 2:, resolution // 8: resolution - resolution // 8] = 0
    return faces, audio, mask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def unet_step_flops(unet, config: UNet3DConfig, resolution: int, device, dtype, guidance: float, deepcache: bool) -> tuple[int, int]:
    """FLOPs of one full UNet step and (DeepCache) of one cached step, CFG batch, 16 frames."""
    from torch.utils.flop_counter import FlopCounterMode

    from lipline.models.latentsync.unet import DeepCacheState

    b = 2 if guidance > 1.0 else 1
    h = resolution // 8
    x = torch.randn(b, config.in_channels, 16, h, h, device=device, dtype=dtype)
    audio = torch.randn(b * 16, 50, config.cross_attention_dim, device=device, dtype=dtype)
    with FlopCounterMode(display=False) as fc:
        unet(x, 501, encoder_hidden_states=audio)
    full = fc.get_total_flops()
    cheap = full
    if deepcache:
        state = DeepCacheState(cache_interval=3)
        unet(x, 501, encoder_hidden_states=audio, deepcache=state, step_index=0)
        with FlopCounterMode(display=False) as fc:
            unet(x, 451, encoder_hidden_states=audio, deepcache=state, step_index=1)
        cheap = fc.get_total_flops()
    return full, cheap


@torch.no_grad()
def window_flops(pipe, faces, audio, mask, kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    n = min(16, faces.shape[0])
    with FlopCounterMode(display=False) as fc:
        pipe.generate(faces[:n], audio[:n], mask, **kwargs)
    return fc.get_total_flops()


def machine_line(device: torch.device) -> str:
    parts = [platform.platform(), f"Python {platform.python_version()}", f"torch {torch.__version__}", f"{os.cpu_count()} CPU threads"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts.append(f"GPU {torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})")
    else:
        parts.append("no CUDA device")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--video" in argv:  # the whole video engine (decode, faces, crops, model, paste-back, encode)
        from bench.video_engine import main as video_main

        return video_main([a for a in argv if a != "--video"])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--full", dest="full", action="store_true", default=None, help="official architecture (default with CUDA)")
    size.add_argument("--tiny", dest="full", action="store_false", help="reduced architecture (smoke run; default without CUDA)")
    ap.add_argument("--frames", type=int, default=None, help="frames to time (default 250 on GPU, 8 on CPU); scaled to 250")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default 20 on GPU, 2 on CPU)")
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--window-batch", type=int, default=1)
    ap.add_argument("--versions", default="1.5,1.6", help="comma list of 1.5 (256 px) / 1.6 (512 px)")
    ap.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32 (default fp16,bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--deepcache", default="on,off", help="comma list of on,off")
    ap.add_argument("--no-flops", action="store_true", help="skip FLOP counting / MFU")
    ap.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"), help="markdown file to append results to ('' = none)")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    notes: list[str] = []
    full = args.full if args.full is not None else cuda
    if full and not cuda:
        notes.append("--full requested but no CUDA device: ran the tiny config instead")
        full = False
    smoke = not cuda
    frames = args.frames or (VIDEO_FRAMES if cuda else 8)
    steps = args.steps or (20 if cuda else 2)
    dtypes = (args.dtypes or ("fp16,bf16" if cuda else "fp32")).split(",")
    if not cuda and any(d != "fp32" for d in dtypes):
        notes.append(f"CPU: dtypes {dtypes} replaced by fp32")
        dtypes = ["fp32"]
    deepcaches = [{"on": True, "off": False}[x.strip()] for x in args.deepcache.split(",")]
    versions = [v.strip() for v in args.versions.split(",")]
    config = UNet3DConfig() if full else UNet3DConfig.tiny()
    vae_kwargs = FULL_VAE if full else TINY_VAE
    if smoke:
        notes.append("SMOKE RUN on CPU with the tiny architecture (random weights): checks the bench runs; "
                     "the figures say nothing about GPU throughput")
    dev_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "CPU"
    peak = peak_tflops(dev_name) if cuda else None
    for n in notes:
        print(f"note: {n}", file=sys.stderr)

    rows = []
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        unet = build_unet(config, device, dtype)
        vae = build_vae(vae_kwargs, device, dtype)
        pipe = LatentSyncPipeline(unet, vae, make_ddim_scheduler())
        for version in versions:
            resolution = version_spec(version).resolution if full else version_spec(version).resolution // 4  # tiny: 64 / 128
            faces, audio, mask = synthetic_inputs(frames, resolution, config.cross_attention_dim, device)
            for dc in deepcaches:
                kw = dict(num_inference_steps=steps, guidance_scale=args.guidance, deepcache=dc, seed=1247,
                          window_batch=args.window_batch, dtype=dtype, device=device)
                label = f"{version} {resolution}px {dtype_name} DeepCache {'on' if dc else 'off'}"
                print(f"running {label} ...", file=sys.stderr)
                try:
                    pipe.generate(faces[:16], audio[:16], mask, **{**kw, "num_inference_steps": min(steps, 2)})  # warm-up
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats(device)
                    sync(device)
                    t0 = time.perf_counter()
                    pipe.generate(faces, audio, mask, **kw)
                    sync(device)
                    seconds = time.perf_counter() - t0
                except torch.cuda.OutOfMemoryError as exc:
                    rows.append({"label": label, "version": version, "resolution": resolution, "dtype": dtype_name,
                                 "deepcache": dc, "error": f"OOM: {str(exc).splitlines()[0]}"})
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                    continue
                row = {"label": label, "version": version, "resolution": resolution, "dtype": dtype_name, "deepcache": dc,
                       "frames": frames, "steps": steps, "seconds": seconds,
                       "per_10s": seconds * VIDEO_FRAMES / frames, "fps": frames / seconds,
                       "peak_vram": torch.cuda.max_memory_allocated(device) if cuda else None}
                if not args.no_flops:
                    full_f, cheap_f = unet_step_flops(unet, config, resolution, device, dtype, args.guidance, dc)
                    win_f = window_flops(pipe, faces, audio, mask, kw)
                    total = win_f * frames / min(16, frames)
                    row.update(unet_step_tflop=full_f / 1e12, unet_cached_step_tflop=cheap_f / 1e12 if dc else None,
                               window_tflop=win_f / 1e12, achieved_tflops=total / seconds / 1e12)
                    row["mfu"] = row["achieved_tflops"] / peak if peak else None
                rows.append(row)
                print(f"  {row['per_10s']:.2f} s per 10 s video, {row['fps']:.2f} frames/s", file=sys.stderr)
        del pipe, unet, vae
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    block = render(rows, device, dev_name, peak, notes, full, frames, steps, args)
    print(block)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(block + "\n")
        print(f"appended to {out}", file=sys.stderr)
    return 0


def _fmt(v, spec: str, na: str = "n/a") -> str:
    return na if v is None else format(v, spec)


def render(rows, device, dev_name, peak, notes, full, frames, steps, args) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/engine_throughput.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"## Engine throughput - {now}{' (CPU SMOKE RUN)' if device.type != 'cuda' else ''}",
        "",
        f"- Command: `{cmd.strip()}`",
        f"- Machine: {machine_line(device)}",
        f"- Model: {'official LatentSync UNet3D (1.27 B params) + sd-vae-ft-mse layout' if full else 'tiny UNet3DConfig.tiny() + small VAE'}, "
        f"random weights; {frames} frames timed (scaled to 250 = 10 s at 25 fps), {steps} steps, guidance {args.guidance}, "
        f"window 16, window batch {args.window_batch}; warm-up window untimed",
        f"- Peak dense fp16/bf16: {f'{peak:g} TFLOP/s ({dev_name})' if peak else f'n/a ({dev_name})'}; MFU = FLOPs counted by "
        "FlopCounterMode over one 16-frame window (VAE + all UNet steps) x windows / time / peak",
    ]
    lines += [f"- Note: {n}" for n in notes]
    lines += ["", "| version | px | dtype | DeepCache | model s / 10 s video | frames/s | peak VRAM GiB | UNet TFLOP/step (full / cached) | TFLOP / 16-frame window | achieved TFLOP/s | MFU |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['version']} | {r['resolution']} | {r['dtype']} | {'on' if r['deepcache'] else 'off'} | {r['error']} | | | | | | |")
            continue
        step = _fmt(r.get("unet_step_tflop"), ".4g") + (" / " + _fmt(r.get("unet_cached_step_tflop"), ".4g") if r["deepcache"] and r.get("unet_step_tflop") is not None else "")
        lines.append(
            f"| {r['version']} | {r['resolution']} | {r['dtype']} | {'on' if r['deepcache'] else 'off'} | {r['per_10s']:.2f} | {r['fps']:.2f} | "
            f"{_fmt(r['peak_vram'] / 2**30 if r['peak_vram'] is not None else None, '.2f')} | {step} | {_fmt(r.get('window_tflop'), '.4g')} | "
            f"{_fmt(r.get('achieved_tflops'), '.4g')} | {_fmt(r['mfu'] * 100 if r.get('mfu') is not None else None, '.1f')}{'%' if r.get('mfu') is not None else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
