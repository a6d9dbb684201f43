"""bench/gpu_suite.sh --cpu-reduced: the GPU suite's code paths at tiny sizes on the CPU, so the suite cannot rot.

Asserts that every figure line is produced (not the timings: speed targets are checked by the benchmarks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUM = r"[0-9.]+"


@pytest.mark.integration
def test_gpu_suite_cpu_reduced(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "bench/gpu_suite.sh", "--cpu-reduced", "--results", str(results)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=2000)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fig = (tmp_path / "out" / "gpu_suite.md").read_text()
    assert results.read_text() == "# earlier results\n" + fig  # appended, nothing else touched
    assert "## GPU suite (bench/gpu_suite.sh --cpu-reduced)" in fig and "- device: CPU reduced run" in fig
    for step in ("engine_throughput", "engine_throughput_compiled", "video_engine", "numerics"):
        if not re.search(rf"^- step {step}: ok in \d+ s$", fig, re.M):
            logs = "".join(p.read_text()[-1500:] for p in sorted((tmp_path / "out").glob("gpu_suite-*.log")))
            pytest.fail(f"step {step} did not finish ok:\n{fig}\n{logs}")
    assert "FAILED" not in fig and "TIMED OUT" not in fig
    # engine throughput: one row per sampler x DeepCache, counted FLOPs, the sampler-quality row
    assert re.search(rf"^- FLOPs at 64 px \(16 frames, CFG batch 2\): UNet step {NUM} TFLOP full, {NUM} cached", fig, re.M)
    for sampler in ("ddim-2", "dpmpp-1"):
        for dc in ("on", "off"):
            assert re.search(rf"^\| 1\.5 \| 64 \| fp32 \| {sampler} \| {dc} \| off \| {NUM} \| {NUM} \| n/a \| {NUM} \| {NUM} \| n/a \| - \|$",
                             fig, re.M), (sampler, dc)
    # the UNet step under torch.compile (dynamo only on the CPU): traced whole, its warm-up timed
    assert re.search(rf"^\| 1\.5 \| 64 \| fp32 \| ddim-2 \| on \| eager \| {NUM} \| {NUM} \| n/a \| n/a \| n/a \| n/a \| "
                     rf"{NUM} \(2 graphs, 0 breaks\) \|$", fig, re.M), fig
    assert re.search(rf"^\| 1\.5 \| 64 \| fp32 \| on \| dpmpp-1 \| ddim-2 \| {NUM} \| {NUM} \| \d+ \|$", fig, re.M)
    assert "the real measurement needs the official weights" in fig
    # the whole video engine on 8 frames
    assert re.search(r"^\| 1\.5 \| 0 \| 1 s 240p8 \| 8 \| [0-9.]+ \|", fig, re.M), fig
    # numerics: bf16 against fp32 on the same inputs, with its tolerances
    assert re.search(rf"^- numerics 1\.5 64px bf16 vs fp32 \(2 DDIM steps.*latents max abs {NUM}.*frames PSNR ({NUM}|inf) dB "
                     r"\(tolerance >= 24\) (PASS|FAIL)$", fig, re.M), fig
    assert re.search(r"^- suite wall time: \d+ s$", fig, re.M)
