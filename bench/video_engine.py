"""The whole `latentsync` video engine: decode, face track, crops, model, paste-back, encode — seconds per second
of video, the share of each stage, peak RSS (flat in segment length?) and the seam measurement.

Each measured run is a child process (its own peak RSS): the face track of the clip, then
`LatentSyncVideoEngine.run_segment` on the whole clip as one segment (16 kHz audio, keep-mouth-in-silence on).

* CPU (default without CUDA): the smoke model (`lipline weights smoke`: random weights, reduced architecture) at
  256 px (1.5), ``--steps 2``: what the pipeline around the model costs, and a floor for the model part.
* GPU (``--full``): the official architecture with random weights (speed does not depend on the values), 20 steps.

    python bench/video_engine.py                                  # CPU: 1080p30, 4 s and 8 s, smoke model
    python bench/video_engine.py --full --seconds 10 --versions 1.5,1.6 --precision fp16

Results are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for `bench.*`; appended, so an installed `lipline` wins over the source folder
    sys.path.append(str(REPO))

from bench._common import BENCH_DIR, RESULTS, append_results, talking_inputs  # noqa: E402

WORK = BENCH_DIR / "_work" / "video_engine"


def full_size_engine(version: str, device: str, precision: str):
    """A `LatentSyncEngine` over the official architecture with random weights (no checkpoint needed)."""
    import torch

    from lipline.models.latentsync.audio import AudioEncoder
    from lipline.models.latentsync.config import UNet3DConfig
    from lipline.models.latentsync.engine import DTYPES, LatentSyncEngine
    from lipline.models.latentsync.model import LatentSyncModel
    from lipline.models.latentsync.unet import UNet3DConditionModel
    from lipline.models.latentsync.weights import version_spec
    from diffusers import AutoencoderKL

    dtype = DTYPES["fp16" if precision == "auto" else precision]
    unet = UNet3DConditionModel(UNet3DConfig()).to(device=device, dtype=dtype).eval()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=256).to(device=device, dtype=dtype).eval()
    model = LatentSyncModel.from_components(unet, vae, AudioEncoder().eval(), version=version,
                                            resolution=version_spec(version).resolution)
    torch.manual_seed(0)
    return LatentSyncEngine(model=model, device=device)


def child(args: argparse.Namespace) -> dict:
    """One measured run (in its own process): face track + engine on the clip; prints a JSON line."""
    import torch

    from lipline.models.face.track import compute_face_track
    from lipline.models.latentsync.video_engine import LatentSyncVideoEngine
    from lipline.records import LipsyncOptions, Segment
    from lipline.media import run_ffmpeg
    from lipline.uris import path_to_uri

    torch.set_num_threads(int(args.threads))
    inputs = talking_inputs(WORK, args.seconds, args.width, args.height, args.fps, bumpers=False)
    audio16 = WORK / f"dub16-{args.seconds}.wav"
    if not audio16.exists():  # the model audio the normalize stage would make
        run_ffmpeg(["-i", inputs["audio"], "-ac", "1", "-ar", "16000", audio16], what="making 16 kHz model audio")
    t0 = time.perf_counter()
    track = compute_face_track(inputs["video"], "largest", landmark_every=args.landmark_every)
    track_s = time.perf_counter() - t0
    options = LipsyncOptions(model_version=args.version, weights_dir=args.weights, steps=args.steps,
                             guidance=args.guidance, precision=args.precision, window_overlap=args.overlap)
    engine = LatentSyncVideoEngine()
    if args.full:
        engine._engines[(options.model_version, options.weights_dir)] = full_size_engine(args.version, "cuda", args.precision)
    n = track.frame_count
    seg = Segment(index=0, start_frame=0, end_frame=n, fps=args.fps, video_uri=path_to_uri(inputs["video"]),
                  audio_uri=str(audio16))
    engine.face_engine(options).load()  # load outside the timing, as a warm worker has it loaded
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = engine.run_segment(seg, inputs["video"], audio16, WORK / f"out-{args.seconds}.mp4", options, track=track)
    engine_s = time.perf_counter() - t0
    stages = dict(result.settings["timings_s"])
    stages["decode_other_s"] = round(engine_s - sum(stages.values()), 3)
    stages["face_track_s"] = round(track_s, 3)
    return {"seconds": args.seconds, "frames": n, "engine_s": round(engine_s, 3), "track_s": round(track_s, 3),
            "stages": stages, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_vram_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
            "generated": sum(s.end - s.start for s in result.generated), "seams": result.settings["seams"],
            "overlap": args.overlap, "version": args.version, "steps": args.steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--full", action="store_true", help="official architecture, random weights, on CUDA")
    ap.add_argument("--seconds", type=float, nargs="*", default=None, help="clip lengths (default 4 8 on CPU)")
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--versions", default="1.5")
    ap.add_argument("--version", default="1.5", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--overlaps", default="2,0", help="window overlaps to compare (seams)")
    ap.add_argument("--overlap", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--landmark-every", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default=None, help="weights dir (default: a smoke model written under bench/_work)")
    ap.add_argument("--out", default=str(RESULTS), help="markdown file to append the results to ('' = print only)")
    args = ap.parse_args(argv)
    steps = args.steps or (20 if args.full else 2)
    if args.child:
        args.seconds = args.seconds[0]
        args.steps = steps
        print(json.dumps(child(args)))
        return 0
    weights = args.weights
    if weights is None and not args.full:
        weights = str(WORK / "smoke-weights")
        from lipline.models.latentsync.smoke import write_smoke_release

        for version in args.versions.split(","):
            write_smoke_release(weights, version)
    rows = []
    for version in args.versions.split(","):
        for overlap in [int(x) for x in args.overlaps.split(",")]:
            for seconds in args.seconds or ([10.0] if args.full else [4.0, 8.0]):
                cmd = [sys.executable, __file__, "--child", "--seconds", str(seconds), "--width", str(args.width),
                       "--height", str(args.height), "--fps", str(args.fps), "--version", version, "--steps",
                       str(steps), "--guidance", str(args.guidance), "--precision", args.precision, "--overlap",
                       str(overlap), "--landmark-every", str(args.landmark_every), "--threads", str(args.threads)]
                cmd += ["--full"] if args.full else ["--weights", weights]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], file=sys.stderr)
    lines = ["| version | overlap | clip | frames | engine s per s of video | face track fps | stage shares | peak RSS | "
             "peak VRAM | mouth MAD at boundaries / within |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        total = sum(r["stages"].values())
        shares = ", ".join(f"{k[:-2]} {100 * v / total:.0f}%" for k, v in r["stages"].items())
        s = r["seams"]
        lines.append(f"| {r['version']} | {r['overlap']} | {r['seconds']:g} s {args.height}p{args.fps:g} | {r['frames']} "
                     f"| {r['engine_s'] / r['seconds']:.2f} | {r['frames'] / r['track_s']:.0f} | {shares} "
                     f"| {r['peak_rss_mb']} MB | {r['peak_vram_mb'] or '-'} | "
                     f"{s['mouth_mad_at_window_boundaries']} / {s['mouth_mad_within_windows']} |")
    kind = "official architecture, random weights" if args.full else "smoke model (random weights, reduced)"
    lines.append(f"\n{kind}; {steps} steps, guidance {args.guidance}, precision {args.precision}; stages: audio = "
                 "whisper features, align = crops, model = LatentSync, paste_encode = paste-back + lossless encode, "
                 "decode_other = decoding and bookkeeping, face_track = detection + landmarks (separate pass).")
    append_results("bench/video_engine.py: the whole latentsync video engine",
                   "python bench/video_engine.py " + " ".join(argv if argv is not None else sys.argv[1:]), lines,
                   Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
