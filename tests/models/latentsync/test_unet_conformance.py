"""Conformance of UNet3DConditionModel against the official golden forward passes (SPEC section 15.1).

Tiny official-structure model (unet_tiny_weights.safetensors, float16-exact values cast up) on CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lipline.models.latentsync.checkpoint import load_unet_state_dict
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.unet import UNet3DConditionModel

pytestmark = pytest.mark.conformance

FP32_TOL = 1e-4
FP64_TOL = 1e-9


@pytest.fixture(scope="module")
def golden(conformance_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(conformance_dir / "unet_forward.safetensors"))


@pytest.fixture(scope="module")
def model32(conformance_dir: Path) -> UNet3DConditionModel:
    from safetensors.torch import load_file

    model = UNet3DConditionModel(UNet3DConfig.tiny()).eval()
    load_unet_state_dict(model, load_file(str(conformance_dir / "unet_tiny_weights.safetensors")), source="unet_tiny_weights")
    return model


@pytest.fixture(scope="module")
def model64(model32: UNet3DConditionModel) -> UNet3DConditionModel:
    return copy.deepcopy(model32).double()


def _run(model, golden, case: str, dtype: torch.dtype, audio: bool = True) -> torch.Tensor:
    prefix = "A" if case == "A1_noaudio" else case
    sample = golden[f"{prefix}.sample"]
    if case == "A1_noaudio":
        sample = sample[1:]
    ehs = golden[f"{prefix}.encoder_hidden_states"].to(dtype) if audio else None
    with torch.no_grad():
        return model(sample.to(dtype), golden[f"{prefix}.timestep"], ehs).sample


@pytest.mark.parametrize("case", ["A", "B", "A1_noaudio"])
def test_forward_float32(model32, golden, case: str) -> None:
    out = _run(model32, golden, case, torch.float32, audio=case != "A1_noaudio")
    ref = golden[f"{case}.out_fp32"]
    assert out.shape == ref.shape and out.dtype == torch.float32
    diff = (out - ref).abs().max().item()
    assert diff <= FP32_TOL, f"{case}: max |diff| {diff:.3g} > {FP32_TOL}"


@pytest.mark.parametrize("case", ["A", "B"])
def test_forward_float64(model64, golden, case: str) -> None:
    out = _run(model64, golden, case, torch.float64)
    ref = golden[f"{case}.out_fp64"]
    assert out.dtype == torch.float64
    diff = (out - ref).abs().max().item()
    assert diff <= FP64_TOL, f"{case}: max |diff| {diff:.3g} > {FP64_TOL}"


def test_no_audio_float64_is_close_to_float32_golden(model64, golden) -> None:
    # there is no float64 golden for A1; the float32 golden is within float32 rounding of the truth
    out = _run(model64, golden, "A1_noaudio", torch.float64, audio=False)
    assert (out.float() - golden["A1_noaudio.out_fp32"]).abs().max().item() <= 2e-5


def test_intermediates_first_mismatch(model64, golden) -> None:
    """Compare every ``A.inter.<module>`` in execution order; the failure names the first module that is off.

    Intermediates are float32 results of the official run (batch element 1, frames 0..3); the float64 model
    gives the truth, so the tolerance is float32 rounding relative to the tensor's magnitude.
    """
    names = [k[len("A.inter.") :] for k in golden if k.startswith("A.inter.")]
    seen: dict[str, torch.Tensor] = {}
    order: list[str] = []
    handles = []
    for name in names:

        def hook(_module, _args, output, name=name):
            out = output[0] if isinstance(output, tuple) else output
            out = getattr(out, "sample", out)
            seen[name] = out[1:2] if out.dim() == 2 else out[1:2, :, :4]
            order.append(name)

        handles.append(model64.get_submodule(name).register_forward_hook(hook))
    try:
        _run(model64, golden, "A", torch.float64)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(names), f"hooks never fired for {sorted(set(names) - set(seen))}"
    report = []
    first_bad = None
    for name in order:
        ref = golden[f"A.inter.{name}"].double()
        got = seen[name]
        assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} vs golden {tuple(ref.shape)}"
        diff = (got - ref).abs().max().item()
        tol = 1e-5 * max(1.0, ref.abs().max().item())
        report.append(f"{name}: {diff:.2e} (tol {tol:.1e})")
        if diff > tol and first_bad is None:
            first_bad = name
    assert first_bad is None, f"first mismatching module: {first_bad}\n" + "\n".join(report)


def test_deepcache_steps_match_official_pipeline_run(model32, conformance_dir: Path) -> None:
    """e2e golden (DeepCache run, block 0): raw UNet outputs of step 0 (full) and step 1 (cached), frames 0..3.

    Step 1's input is rebuilt with one CFG + DDIM step (guidance 1.5, t 951 -> 901, SPEC 7) from our step 0.
    """
    from safetensors.torch import load_file

    e2e = load_file(str(conformance_dir / "e2e_golden.safetensors"))
    chunks = load_file(str(conformance_dir / "whisper_golden.safetensors"))["short.chunks"]  # [27, 50, 64]
    from lipline.models.latentsync.unet import DeepCacheState

    f = 16
    latents = e2e["init_noise"].repeat(1, 1, f, 1, 1)  # [1,4,1,h,w] -> [1,4,f,h,w]
    cond = torch.cat([e2e["batch0.mask_latents"], e2e["batch0.masked_image_latents"], e2e["batch0.ref_latents"]], dim=1)
    cond = torch.cat([cond, cond])  # CFG: [uncond, cond]
    audio = torch.cat([torch.zeros_like(chunks[:f]), chunks[:f]])  # zero audio first: [2*f, 50, 64]
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    state = DeepCacheState(cache_interval=3)
    outs = []
    with torch.no_grad():
        for j, t in enumerate((951, 901)):
            unet_in = torch.cat([torch.cat([latents, latents]), cond], dim=1)  # [2, 13, f, h, w]
            eps = model32(unet_in, t, audio, deepcache=state, step_index=j).sample
            outs.append(eps)
            uncond, text = eps.chunk(2)
            eps = uncond + 1.5 * (text - uncond)
            a_t, a_prev = alphas_cumprod[t], alphas_cumprod[t - 50]
            x0 = (latents - (1 - a_t) ** 0.5 * eps) / a_t**0.5
            latents = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    assert (state.full_steps, state.cached_steps) == (1, 1)
    for j, out in enumerate(outs):
        ref = e2e[f"dc.batch0.noise_pred_step{j}"]
        diff = (out[:, :, :4] - ref).abs().max().item()
        assert diff <= FP32_TOL, f"step {j}: max |diff| {diff:.3g} > {FP32_TOL}"
