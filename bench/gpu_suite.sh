#!/usr/bin/env bash
# Every GPU measurement of Lipline in one call (budget: under 8 minutes on an H100/H200), so that a GPU machine,
# lent only now and then, is used once and briefly:
#
#   1. bench/engine_throughput.py, full size (random weights): seconds per 10 s of 25 fps video, frames/s, peak VRAM,
#      MFU for 1.5 @256 and 1.6 @512; fp16 with DeepCache on/off and DDIM-20 vs DPM-Solver++-10 (+ the mouth-crop
#      PSNR/SSIM between the two samplers); bf16 with the defaults (DDIM-20, DeepCache on); then the UNet step under
#      torch.compile: 1.5 @256 fp16 DDIM-20 DeepCache on with CUDA graphs (dynamo, no Inductor) and Inductor's
#      reduce-overhead (Inductor + CUDA graphs), each warmed up by one whole untimed run (its compile seconds shown)
#   2. bench/video_engine.py --full: the whole latentsync video engine on 10 s of 1080p30 (1.5 and 1.6)
#   3. bench/gpu_numerics.py: fp16 / bf16 against fp32 on the same inputs (latents max abs, frames PSNR, tolerances)
#      and the number of host syncs inside the denoising loop
#
# Figures go to $OUT/gpu_suite.md when OUT is set (else bench/_work/gpu_suite.md), with the GPU's name, and are
# appended to bench/RESULTS.md (--results FILE to change). Each step has its own time limit; a step that fails or
# runs out of time is recorded as such and the suite goes on.
#
#   bash bench/gpu_suite.sh                 # on a GPU machine, from the repository root
#   bash bench/gpu_suite.sh --cpu-reduced   # the same code paths at tiny sizes on the CPU (about 2.5 min on 2 cores; CI runs it)
set -u
cd "$(dirname "$0")/.."
REDUCED=0
RESULTS=bench/RESULTS.md
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-reduced) REDUCED=1 ;;
    --results) shift; RESULTS="${1:?--results needs a file}" ;;
    *) echo "gpu_suite.sh: unknown argument '$1' (use --cpu-reduced, --results FILE)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
DEST="${OUT:-bench/_work}"
mkdir -p "$DEST"
FIG="$DEST/gpu_suite.md"
export HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
START=$(date +%s)

if [ "$REDUCED" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""  # the CPU code paths even on a GPU machine
  DEVICE="CPU reduced run (no GPU used): $(uname -m), $(getconf _NPROCESSORS_ONLN) cores"
  ET_ARGS=(--reduced --frames 2 --versions 1.5 --schedulers ddim:2,dpmpp:1)
  ET2_ARGS=()  # the CPU has no bf16 speed to measure: the bf16 run is the same code path as step 1
  ETC_ARGS=(--reduced --frames 2 --versions 1.5 --schedulers ddim:2 --deepcache on --compile eager --no-flops)  # the UNet traces
  VE_ARGS=(--seconds 1 --width 320 --height 240 --fps 8 --overlaps 0 --steps 1)
  NUM_ARGS=(--reduced --versions 1.5 --steps 2)
  LIMITS=(600 0 600 600 600)  # generous: CI may share its cores; the limits only stop a hung step
else
  DEVICE="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  [ -n "$DEVICE" ] || DEVICE="$("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE")')"
  ET_ARGS=(--full --dtypes fp16 --deepcache on,off --schedulers ddim:20,dpmpp:10)
  ET2_ARGS=(--full --dtypes bf16 --deepcache on --schedulers ddim:20)
  ETC_ARGS=(--full --versions 1.5 --dtypes fp16 --deepcache on --schedulers ddim:20 --compile cudagraphs,reduce-overhead --no-flops)
  VE_ARGS=(--full --seconds 10 --versions 1.5,1.6 --overlaps 2 --precision fp16)
  NUM_ARGS=(--versions 1.5,1.6)
  LIMITS=(150 45 150 40 95)  # 480 s in all (never yet run on a GPU: the split is a guess; a step over its limit is recorded)
fi

{
  echo
  echo "## GPU suite (bench/gpu_suite.sh$([ "$REDUCED" = 1 ] && echo ' --cpu-reduced')) — $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "- device: $DEVICE"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$FIG"

step() {  # step NAME LIMIT_S command...: run, keep its figures (stdout) in $FIG, record failures and time-outs
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS log="$DEST/gpu_suite-$name.log"
  echo "gpu_suite: $name ..." >&2
  timeout "$limit" "$@" > "$log.out" 2> "$log"
  local rc=$?
  cat "$log.out" >> "$FIG"
  if [ $rc -eq 124 ]; then
    echo "- step $name: TIMED OUT after ${limit} s (see $log)" >> "$FIG"
  elif [ $rc -ne 0 ]; then
    echo "- step $name: FAILED (exit $rc): $(tail -1 "$log")" >> "$FIG"
  else
    echo "- step $name: ok in $((SECONDS - t0)) s" >> "$FIG"
  fi
}

step engine_throughput "${LIMITS[0]}" "$PY" bench/engine_throughput.py "${ET_ARGS[@]}" --out ""
[ ${#ET2_ARGS[@]} -gt 0 ] && step engine_throughput_bf16 "${LIMITS[1]}" "$PY" bench/engine_throughput.py "${ET2_ARGS[@]}" --out ""
step engine_throughput_compiled "${LIMITS[4]}" "$PY" bench/engine_throughput.py "${ETC_ARGS[@]}" --out ""
# The whole-engine step needs PyAV, MediaPipe, kornia, librosa and ffmpeg (imageio-ffmpeg): on the lent GPU machine
# they are not installed and too large to carry in one call (bench/gpu_bundle.py), so there it is recorded as not run.
VE_MISSING="$("$PY" -c 'import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' \
  av mediapipe kornia librosa imageio_ffmpeg 2>&1)"
if [ -z "$VE_MISSING" ]; then
  step video_engine "${LIMITS[2]}" "$PY" bench/video_engine.py "${VE_ARGS[@]}" --out ""
else
  echo "- step video_engine: NOT RUN: $PY cannot import $VE_MISSING (the whole-engine figures need them)" >> "$FIG"
fi
step numerics "${LIMITS[3]}" "$PY" bench/gpu_numerics.py "${NUM_ARGS[@]}"

echo "- suite wall time: $(( $(date +%s) - START )) s" >> "$FIG"
cat "$FIG" >> "$RESULTS"
cat "$FIG"
echo "gpu_suite: figures in $FIG, appended to $RESULTS" >&2
