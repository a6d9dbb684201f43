"""LatentSync engine throughput: model seconds per 10 s of 25 fps video, frames/s, peak VRAM, MFU, sampler quality.

Full-size architecture (official UNet3DConfig + the sd-vae-ft-mse AutoencoderKL layout) with **random weights**
(no checkpoint needed: speed and memory do not depend on the values). For each release (1.5 -> 256 px,
1.6 -> 512 px), dtype, sampler (official DDIM at 20 steps, DPM-Solver++ at 10) and DeepCache setting it times
`LatentSyncPipeline.generate` on ``--frames`` aligned faces (default 250 = 10 s at 25 fps; other counts are scaled
to 250), after one untimed warm-up window.

``--compile`` times the UNet step under `torch.compile` as well (a comma list; default ``off``): ``cudagraphs``
(dynamo + CUDA graphs, no Inductor), ``inductor``, ``reduce-overhead`` (Inductor + CUDA graphs), ``max-autotune``,
``eager`` (dynamo tracing only: the CPU check that the UNet traces). A compiled row is warmed up by one whole untimed
run on the same inputs (first, full/DeepCache and tail-window shapes all compiled before the clock starts); that
warm-up's time is its ``compile s`` column. A mode that fails to compile or run is recorded in its row.

FLOPs are counted on the meta device (`bench/flops.py`: one full and one DeepCache UNet step, VAE encode/decode of a
16-frame window); MFU = counted FLOPs of the run / seconds / the device's dense fp16/bf16 peak (unknown -> n/a).
Sampler quality: PSNR/SSIM of the generated mouth crops of DPM-Solver++ against DDIM on the same inputs and seed
(`bench/quality.py`). With random weights that difference says nothing about lip-sync quality; the real
measurement needs the official weights.

``--reduced`` (default without CUDA) runs the tiny config (`UNet3DConfig.tiny()`, a small VAE) on a few frames on
the CPU in seconds: it exercises every code path of this script; its figures say nothing about GPU throughput.

    python bench/engine_throughput.py                      # GPU: both releases, fp16+bf16, DeepCache on+off, both samplers
    python bench/engine_throughput.py --versions 1.6 --dtypes fp16 --deepcache on --frames 64
    python bench/engine_throughput.py --reduced            # CPU smoke
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
if str(REPO) not in sys.path:  # for `bench.*`; appended, so an installed `lipline` wins over the source folder
    sys.path.append(str(REPO))

from bench.flops import count_flops, mfu, peak_tflops  # noqa: E402
from bench.quality import mouth_crop_quality  # noqa: E402
from lipline.models.latentsync.config import UNet3DConfig  # noqa: E402
from lipline.models.latentsync.pipeline import LatentSyncPipeline  # noqa: E402
from lipline.models.latentsync.scheduler import SCHEDULERS, make_scheduler  # noqa: E402
from lipline.models.latentsync.unet import UNet3DConditionModel  # noqa: E402
from lipline.models.latentsync.weights import version_spec  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FULL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=512)
TINY_VAE = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8, sample_size=64)
VIDEO_FRAMES = 250  # 10 s at 25 fps
RANDOM_WEIGHTS_NOTE = ("random weights: the sampler difference says nothing about lip-sync quality; "
                       "the real measurement needs the official weights (open)")


def build_vae(kwargs: dict, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", latent_channels=4, **kwargs)
    return vae.to(device=device, dtype=dtype).eval()


def build_unet(config: UNet3DConfig, device: torch.device, dtype: torch.dtype) -> UNet3DConditionModel:
    with torch.device(device):
        unet = UNet3DConditionModel(config)
    return unet.to(dtype=dtype).eval()


def synthetic_inputs(frames: int, resolution: int, width: int):
    """uint8 faces ``[N, 3, R, R]``, audio chunks ``[N, 50, width]``, a float64 mask regenerating the lower middle."""
    g = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, (frames, 3, resolution, resolution), generator=g, dtype=torch.uint8)
    audio = torch.randn(frames, 50, width, generator=g)
    mask = torch.ones(3, resolution, resolution, dtype=torch.float64)
    mask[:, resolution // 2:, resolution // 8: resolution - resolution // 8] = 0
    return faces, audio, mask


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_schedulers(text: str) -> list[tuple[str, int]]:
    """``"ddim:20,dpmpp:10"`` -> ``[("ddim", 20), ("dpmpp", 10)]``."""
    out = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in SCHEDULERS or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--schedulers: {item!r} is not NAME:STEPS with NAME in {', '.join(SCHEDULERS)}")
        out.append((name, int(steps)))
    return out


def machine_line(device: torch.device) -> str:
    parts = [platform.platform(), f"Python {platform.python_version()}", f"torch {torch.__version__}", f"{os.cpu_count()} CPU threads"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts.append(f"GPU {torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})")
    else:
        parts.append("no CUDA device")
    return "; ".join(parts)


COMPILE_MODES: dict[str, dict | None] = {
    "off": None,
    "eager": {"backend": "eager"},
    "cudagraphs": {"backend": "cudagraphs"},
    "inductor": {},
    "reduce-overhead": {"mode": "reduce-overhead"},
    "max-autotune": {"mode": "max-autotune"},
}


def parse_compile(text: str) -> list[str]:
    """``"off,reduce-overhead"`` -> ``["off", "reduce-overhead"]`` (every name checked)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in COMPILE_MODES]
    if bad or not names:
        raise SystemExit(f"--compile: {', '.join(bad) or repr(text)} not in {', '.join(COMPILE_MODES)}")
    return names


def compiled_unet(unet, mode: str):
    """The UNet as the pipeline calls it under compile mode `mode` (the module itself for ``off``)."""
    kwargs = COMPILE_MODES[mode]
    if kwargs is None:
        return unet
    torch._dynamo.reset()  # each mode compiles from scratch: no graphs or guards left from the previous one
    return torch.compile(unet, **kwargs)


def time_run(pipe, faces, audio, mask, kw: dict, device: torch.device, whole_warmup: bool = False):
    """Untimed warm-up, then the timed run: (seconds, peak VRAM bytes or None, uint8 faces, warm-up seconds).

    The warm-up is one window at 2 steps, or (``whole_warmup``, for a compiled UNet) the whole run on the same
    inputs, so that every shape and code path is compiled before the clock starts."""
    sync(device)
    t0 = time.perf_counter()
    if whole_warmup:
        pipe.generate(faces, audio, mask, **kw)
    else:
        pipe.generate(faces[:16], audio[:16], mask, **{**kw, "num_inference_steps": min(kw["num_inference_steps"], 2)})
    sync(device)
    warmup = time.perf_counter() - t0
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    out = pipe.generate(faces, audio, mask, **kw)
    sync(device)
    seconds = time.perf_counter() - t0
    return seconds, (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None), out.faces, warmup


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--video" in argv:  # the whole video engine (decode, faces, crops, model, paste-back, encode)
        from bench.video_engine import main as video_main

        return video_main([a for a in argv if a != "--video"])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--full", dest="full", action="store_true", default=None, help="official architecture (default with CUDA)")
    size.add_argument("--reduced", "--tiny", dest="full", action="store_false", help="tiny architecture on few frames (default without CUDA)")
    ap.add_argument("--frames", type=int, default=None, help="frames to time (default 250 full, 8 reduced); scaled to 250")
    ap.add_argument("--schedulers", default=None, help="NAME:STEPS list (default ddim:20,dpmpp:10 full, ddim:4,dpmpp:2 reduced)")
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--window-batch", type=int, default=1)
    ap.add_argument("--versions", default="1.5,1.6", help="comma list of 1.5 (256 px) / 1.6 (512 px)")
    ap.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32 (default fp16,bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--deepcache", default="on,off", help="comma list of on,off")
    ap.add_argument("--compile", default="off", help=f"comma list of UNet compile modes: {', '.join(COMPILE_MODES)} (default off)")
    ap.add_argument("--no-flops", action="store_true", help="skip FLOP counting / MFU")
    ap.add_argument("--out", default=str(REPO / "bench" / "RESULTS.md"), help="markdown file to append results to ('' = none)")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    notes: list[str] = []
    full = args.full if args.full is not None else cuda
    if full and not cuda:
        notes.append("--full requested but no CUDA device: ran the reduced (tiny) config instead")
        full = False
    frames = args.frames or (VIDEO_FRAMES if full else 8)
    schedulers = parse_schedulers(args.schedulers or ("ddim:20,dpmpp:10" if full else "ddim:4,dpmpp:2"))
    dtypes = (args.dtypes or ("fp16,bf16" if cuda else "fp32")).split(",")
    if not cuda and any(d != "fp32" for d in dtypes):
        notes.append(f"CPU: dtypes {dtypes} replaced by fp32")
        dtypes = ["fp32"]
    deepcaches = [{"on": True, "off": False}[x.strip()] for x in args.deepcache.split(",")]
    compiles = parse_compile(args.compile)
    versions = [v.strip() for v in args.versions.split(",")]
    config = UNet3DConfig() if full else UNet3DConfig.tiny()
    vae_kwargs = FULL_VAE if full else TINY_VAE
    if not cuda:
        notes.append("REDUCED RUN on CPU (tiny architecture, random weights): checks the bench runs; "
                     "the figures say nothing about GPU throughput")
    dev_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "CPU"
    peak = peak_tflops(dev_name) if cuda else None
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    resolutions = {v: version_spec(v).resolution if full else version_spec(v).resolution // 4 for v in versions}  # tiny: 64 / 128
    flops = {} if args.no_flops else count_flops(config, vae_kwargs, sorted(set(resolutions.values())), guidance=args.guidance)

    rows, quality = [], []
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        unet = build_unet(config, device, dtype)
        vae = build_vae(vae_kwargs, device, dtype)
        for version in versions:
            resolution = resolutions[version]
            faces, audio, mask = synthetic_inputs(frames, resolution, config.cross_attention_dim)
            outputs: dict[tuple[str, bool], torch.Tensor] = {}
            for sched, steps in schedulers:
                for mode in compiles:
                    pipe = LatentSyncPipeline(compiled_unet(unet, mode), vae, make_scheduler(sched))
                    for dc in deepcaches:
                        row = {"version": version, "resolution": resolution, "dtype": dtype_name, "deepcache": dc,
                               "sampler": f"{sched}-{steps}", "steps": steps, "compile": mode}
                        out_faces = run_row(row, pipe, (faces, audio, mask), steps, dc, dtype, device, args, flops, peak, frames)
                        rows.append(row)
                        if out_faces is not None and mode == compiles[0]:
                            outputs[(sched, dc)] = out_faces
            ref = next(((s, n) for s, n in schedulers if s == "ddim"), None)
            for sched, steps in schedulers:
                for dc in deepcaches:
                    if ref and sched != "ddim" and (sched, dc) in outputs and ("ddim", dc) in outputs:
                        q = mouth_crop_quality(outputs[("ddim", dc)], outputs[(sched, dc)], mask)
                        quality.append({"version": version, "resolution": resolution, "dtype": dtype_name, "deepcache": dc,
                                        "sampler": f"{sched}-{steps}", "reference": f"ddim-{ref[1]}", **q})
            del outputs
        del unet, vae
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    block = render(rows, quality, flops, device, dev_name, peak, notes, full, frames, args)
    print(block)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as fh:
            fh.write(block + "\n")
        print(f"appended to {out}", file=sys.stderr)
    return 0


def dynamo_graphs() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process (torch._dynamo's counters)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def run_row(row: dict, pipe, inputs, steps: int, dc: bool, dtype, device: torch.device, args, flops: dict, peak,
            frames: int):
    """Time one configuration into `row` (its figures, or its error); the generated faces, or None."""
    faces, audio, mask = inputs
    compiled = row["compile"] != "off"
    kw = dict(num_inference_steps=steps, guidance_scale=args.guidance, deepcache=dc, seed=1247,
              window_batch=args.window_batch, dtype=dtype, device=device)
    print(f"running {row['version']} {row['resolution']}px {row['dtype']} {row['sampler']} DeepCache {'on' if dc else 'off'} "
          f"compile {row['compile']} ...", file=sys.stderr)
    graphs_before = dynamo_graphs()
    try:
        seconds, peak_vram, out_faces, warmup = time_run(pipe, faces, audio, mask, kw, device, whole_warmup=compiled)
    except torch.cuda.OutOfMemoryError as exc:
        row["error"] = f"OOM: {str(exc).splitlines()[0]}"
        out_faces = None
    except Exception as exc:  # noqa: BLE001 - a compile mode this torch/GPU cannot do is a figure, not a crash
        if not compiled:
            raise
        row["error"] = f"compile {row['compile']} failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
        out_faces = None
    if out_faces is None:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None
    row.update(seconds=seconds, per_10s=seconds * VIDEO_FRAMES / frames, fps=frames / seconds, peak_vram=peak_vram,
               compile_s=warmup if compiled else None)
    if compiled:  # what dynamo made of the UNet: CUDA graphs pay off only without graph breaks
        graphs, breaks = (after - before for after, before in zip(dynamo_graphs(), graphs_before))
        row["graphs"] = f"{graphs} graph{'s' if graphs != 1 else ''}, {breaks} break{'s' if breaks != 1 else ''}"
    if row["resolution"] in flops:
        f = flops[row["resolution"]]
        run_flops = f.run(frames, steps, dc)
        row.update(unet_step_tflop=f.unet_full / 1e12, unet_cached_tflop=f.unet_cached / 1e12 if dc else None,
                   window_tflop=f.window(steps, dc) / 1e12, achieved_tflops=run_flops / seconds / 1e12,
                   mfu=mfu(run_flops, seconds, peak))
    print(f"  {row['per_10s']:.2f} s per 10 s video, {row['fps']:.2f} frames/s", file=sys.stderr)
    return out_faces


def _compile_cell(row: dict) -> str:
    """``-`` for an eager row; the warm-up seconds and what dynamo made of the UNet for a compiled one."""
    cell = _fmt(row.get("compile_s"), ".1f", "-")
    return f"{cell} ({row['graphs']})" if row.get("graphs") else cell


def _fmt(v, spec: str, na: str = "n/a") -> str:
    return na if v is None else format(v, spec)


def render(rows, quality, flops, device, dev_name, peak, notes, full, frames, args) -> str:
    """The markdown block: header, counted FLOPs, the timing table, the sampler-quality table."""
    from bench._common import git_commit

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/engine_throughput.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        f"## Engine throughput - {now}{' (CPU REDUCED RUN)' if device.type != 'cuda' else ''}",
        "",
        f"- Command: `{cmd.strip()}`",
        f"- Machine: {machine_line(device)}",
        f"- Commit: {git_commit()}",
        f"- Model: {'official LatentSync UNet3D (1.27 B params) + sd-vae-ft-mse layout' if full else 'tiny UNet3DConfig.tiny() + small VAE'}, "
        f"random weights; {frames} frames timed (scaled to 250 = 10 s at 25 fps), guidance {args.guidance}, "
        f"window 16, window batch {args.window_batch}; warm-up window untimed (a compiled UNet: one whole untimed run)",
        f"- Peak dense fp16/bf16: {f'{peak:g} TFLOP/s ({dev_name})' if peak else f'n/a ({dev_name})'}; MFU = FLOPs counted on the "
        "meta device (bench/flops.py: UNet full / DeepCache step, VAE encode x2 + decode per 16-frame window) x windows / time / peak",
    ]
    for res, f in sorted(flops.items()):
        lines.append(f"- FLOPs at {res} px (16 frames, CFG batch {f.cfg_batch}): UNet step {f.unet_full / 1e12:.4g} TFLOP full, "
                     f"{f.unet_cached / 1e12:.4g} cached; VAE encode {f.vae_encode / 1e12:.4g}, decode {f.vae_decode / 1e12:.4g} TFLOP")
    lines += [f"- Note: {n}" for n in notes]
    lines += ["", "| version | px | dtype | sampler | DeepCache | compile | model s / 10 s video | frames/s | peak VRAM GiB | "
              "TFLOP / 16-frame window | achieved TFLOP/s | MFU | compile s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['version']} | {r['resolution']} | {r['dtype']} | {r['sampler']} | {'on' if r['deepcache'] else 'off'} | {r['compile']} |"
        if "error" in r:
            lines.append(f"{head} {r['error']} | | | | | | |")
            continue
        m = r.get("mfu")
        lines.append(
            f"{head} {r['per_10s']:.2f} | {r['fps']:.2f} | {_fmt(r['peak_vram'] / 2**30 if r['peak_vram'] is not None else None, '.2f')} | "
            f"{_fmt(r.get('window_tflop'), '.4g')} | {_fmt(r.get('achieved_tflops'), '.4g')} | {_fmt(m * 100 if m is not None else None, '.1f')}{'%' if m is not None else ''} | "
            f"{_compile_cell(r)} |")
    if quality:
        lines += ["", f"Sampler quality, generated mouth crops vs the DDIM output on the same inputs and seed ({RANDOM_WEIGHTS_NOTE}):", "",
                  "| version | px | dtype | DeepCache | sampler | reference | PSNR dB | SSIM | max abs |", "|---|---|---|---|---|---|---|---|---|"]
        for q in quality:
            lines.append(f"| {q['version']} | {q['resolution']} | {q['dtype']} | {'on' if q['deepcache'] else 'off'} | {q['sampler']} | "
                         f"{q['reference']} | {q['psnr_db']:.2f} | {q['ssim']:.4f} | {q['max_abs']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
