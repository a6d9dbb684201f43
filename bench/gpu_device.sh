#!/usr/bin/env bash
# bench/gpu_suite.sh on the lent GPU machine, in one device call. That machine has Python 3.12 with PyTorch (and
# transformers, numpy, scipy, ...) but no registry and not this project's other packages: the wheels come along in
# .whl/, made on the development machine by `python bench/gpu_bundle.py`, and are installed here first.
#
#   run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=600)
#
# What comes back ($OUT, at most 8 files): gpu_suite.md (the figures, with the GPU's name) and gpu_suite-logs.tar.gz
# (each step's output). Append gpu_suite.md to bench/RESULTS.md on the development machine: the device's copy of the
# repository is thrown away. Exit codes: 2 no wheels, 3 install failed, 4 the model steps do not import, 5 no CUDA.
#
#   bash bench/gpu_device.sh --rehearse   # no GPU needed: the same install and import check, then the suite's
#                                         # --cpu-reduced mode (PYTHON=a device-like interpreter; see README)
set -u
cd "$(dirname "$0")/.."
MODE=gpu SUITE_ARGS=()
case "${1:-}" in
  "") ;;
  --rehearse) MODE=rehearse SUITE_ARGS=(--cpu-reduced) ;;
  *) echo "gpu_device.sh: unknown argument '$1' (use --rehearse, or nothing)" >&2; exit 2 ;;
esac
PY="${PYTHON:-python3}"
SITE="${LIPLINE_GPU_SITE:-/tmp/gpu-suite-site}"
WORK="${LIPLINE_GPU_WORK:-/tmp/gpu-suite-work}"
BACK="${OUT:-bench/_work}"
mkdir -p "$WORK" "$BACK"

WHEELS="${LIPLINE_GPU_WHEELS:-.whl}"
if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  echo "gpu_device.sh: no wheels in $WHEELS: run 'python bench/gpu_bundle.py' on the development machine, then carry .whl" >&2
  exit 2
fi
if ! "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl; then
  echo "gpu_device.sh: installing the wheels of $WHEELS into $SITE failed (see above)" >&2
  exit 3
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHON="$PY" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# Every module the model steps import, before any step spends device time; then the device itself.
"$PY" -P - "$MODE" <<'EOF' || exit $?
import importlib
import sys

sys.path.append(".")  # `bench.*` from the repository; `lipline` is the installed wheel (not the source folder)

modules = ["diffusers", "transformers", "pydantic_settings", "soundfile", "lipline.models.latentsync.pipeline",
           "bench.engine_throughput", "bench.gpu_numerics"]
failed = []
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - each failure is reported, then the script stops
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
if failed:
    print("gpu_device.sh: the suite's model steps would not import:\n  " + "\n  ".join(failed), file=sys.stderr)
    sys.exit(4)
import torch
if not torch.cuda.is_available() and sys.argv[1] != "rehearse":
    print(f"gpu_device.sh: torch {torch.__version__} sees no CUDA device: nothing to measure here", file=sys.stderr)
    sys.exit(5)
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device (rehearsal)"
print(f"gpu_device.sh: torch {torch.__version__}, {device}, every model-step module imports", file=sys.stderr)
EOF

OUT="$WORK" bash bench/gpu_suite.sh "${SUITE_ARGS[@]}" --results "$WORK/RESULTS.md"
rc=$?
cp "$WORK/gpu_suite.md" "$BACK/" 2> /dev/null
(cd "$WORK" && tar -czf "$BACK/gpu_suite-logs.tar.gz" gpu_suite-*.log*) 2> /dev/null
echo "gpu_device.sh: figures in $BACK/gpu_suite.md, step logs in $BACK/gpu_suite-logs.tar.gz" >&2
exit $rc
