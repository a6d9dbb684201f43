"""End-to-end conformance of the sampling loop against the official pipeline (e2e_golden, SPEC 15 (a) and (b)).

Reduced models: tiny UNet (channels 32/32/32/64, audio width 64), tiny VAE (16/16/32/32), reduced whisper; R = 128,
27 frames from ``audio_short.wav`` -> 2 windows (16 + 11), seed 1247, 20 DDIM steps, CPU float32.
"""

from __future__ import annotations

import json

import pytest
import torch

from lipline.models.latentsync.audio import AudioEncoder, feature_chunks, load_audio_16k
from lipline.models.latentsync.checkpoint import load_unet_state_dict
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.mask import load_mask
from lipline.models.latentsync.pipeline import LatentSyncPipeline, denoise_block, faces_to_pixels, pixels_to_uint8, prepare_block
from lipline.models.latentsync.scheduler import make_ddim_scheduler
from lipline.models.latentsync.unet import DeepCacheState, UNet3DConditionModel
from lipline.models.latentsync.vae import decode

pytestmark = pytest.mark.conformance

RESOLUTION = 128
WINDOW = 16
SEED = 1247
RUNS = {"dc": (1.5, True), "nodc": (1.5, False), "g1": (1.0, False)}  # guidance, DeepCache


def _tolerance(manifest: dict, key: str) -> float:
    """Parse ``<= X`` from the manifest's recommended_tolerances entry."""
    text = manifest["recommended_tolerances"][key]
    return float(text.split("<=")[1].split()[0])


@pytest.fixture(scope="module")
def golden(conformance_dir):
    from safetensors.torch import load_file

    return load_file(str(conformance_dir / "e2e_golden.safetensors"))


@pytest.fixture(scope="module")
def unet(conformance_dir):
    from safetensors.torch import load_file

    config = UNet3DConfig.from_dict(json.loads((conformance_dir / "unet_tiny_config.json").read_text()))
    model = UNet3DConditionModel(config).eval()
    weights = {k: v.float() for k, v in load_file(str(conformance_dir / "unet_tiny_weights.safetensors")).items()}
    load_unet_state_dict(model, weights, source="unet_tiny_weights.safetensors")
    return model


@pytest.fixture(scope="module")
def vae(conformance_dir):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    model = AutoencoderKL(**json.loads((conformance_dir / "vae_tiny_config.json").read_text()))
    model.load_state_dict({k: v.float() for k, v in load_file(str(conformance_dir / "vae_tiny_weights.safetensors")).items()}, strict=True)
    return model.float().eval()


@pytest.fixture(scope="module")
def chunks(conformance_dir):
    dims = json.loads((conformance_dir / "whisper_reduced_dims.json").read_text())
    encoder = AudioEncoder.from_openai_checkpoint(conformance_dir / "whisper_reduced_encoder.safetensors", dims)
    return feature_chunks(encoder.features(load_audio_16k(conformance_dir / "audio_short.wav")))  # [27, 50, 64]


@pytest.fixture(scope="module")
def mask(conformance_dir):
    return load_mask(conformance_dir / "mask.png", RESOLUTION)


@pytest.fixture(scope="module")
def faces(golden):
    return golden["faces_src"][golden["loop.source_index"]]  # ping-pong looped aligned faces [27, 3, 128, 128]


def _windows(n: int) -> list[tuple[int, int]]:
    return [(j, s) for j, s in enumerate(range(0, n, WINDOW))]


def test_inputs_consistent(golden, chunks, mask, conformance_manifest):
    assert chunks.shape == (conformance_manifest["files"]["e2e_golden.safetensors"]["observed"]["n_chunks"], 50, 64)
    assert torch.equal((mask[0] * 255).round().to(torch.uint8), golden["mask128_u8"])


# ------------------------------------------------------------------------------------------------- (a)


@pytest.mark.parametrize("run", list(RUNS))
def test_a_loop_from_stored_latents(run, golden, unet, chunks, conformance_manifest):
    """Stored init noise + per-block latents + our whisper chunks -> final latents of the official loop."""
    tol = _tolerance(conformance_manifest, "denoising_loop")
    guidance, use_dc = RUNS[run]
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(20)
    n = chunks.shape[0]
    diffs = {}
    for j, start in _windows(n):
        f = min(WINDOW, n - start)
        steps: list[torch.Tensor] = []
        with torch.no_grad():
            final = denoise_block(
                unet,
                scheduler,
                golden["init_noise"].expand(1, 4, f, 16, 16).contiguous(),
                golden[f"batch{j}.mask_latents"],
                golden[f"batch{j}.masked_image_latents"],
                golden[f"batch{j}.ref_latents"],
                chunks[start : start + f][None],
                guidance_scale=guidance,
                deepcache=DeepCacheState(cache_interval=3) if use_dc else None,
                step_callback=lambda i, t, x: steps.append(x[0, :, 0:2].clone()),
            )
        diffs[f"batch{j}.final"] = (final - golden[f"{run}.batch{j}.final_latents"]).abs().max().item()
        key = f"{run}.batch{j}.step_latents_f0_2"
        if key in golden:
            diffs[f"batch{j}.steps"] = (torch.stack(steps) - golden[key]).abs().max().item()
    print(run, diffs)
    assert max(diffs.values()) <= tol, diffs


# ------------------------------------------------------------------------------------------------- (b)


def test_b_rng_order_reproduces_noise_and_block_latents(golden, vae, faces, mask, conformance_manifest):
    tol = _tolerance(conformance_manifest, "latents_from_vae")
    generator = torch.Generator().manual_seed(SEED)  # == accelerate.set_seed(1247) + global draws
    noise = torch.randn((1, 4, 1, 16, 16), generator=generator, dtype=torch.float32)
    assert torch.equal(noise, golden["init_noise"])
    for j, start in _windows(faces.shape[0]):
        block = prepare_block(vae, faces[start : start + WINDOW], mask, generator=generator, dtype=torch.float32, device=torch.device("cpu"))
        assert torch.equal(block.mask_latents, golden[f"batch{j}.mask_latents"])
        torch.testing.assert_close(block.masked_image_latents, golden[f"batch{j}.masked_image_latents"], rtol=0, atol=tol)
        torch.testing.assert_close(block.ref_latents, golden[f"batch{j}.ref_latents"], rtol=0, atol=tol)


def test_b_decode_of_stored_latents(golden, vae):
    decoded = decode(vae, golden["nodc.batch0.final_latents"][0].permute(1, 0, 2, 3))  # [16, 3, 128, 128]
    torch.testing.assert_close(decoded[0:1], golden["nodc.batch0.decoded_f0"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("run", ["nodc", "dc"])
def test_b_generate_from_faces(run, golden, unet, vae, faces, chunks, mask):
    """Full `generate` from the stored faces and seed 1247 reproduces the official final latents."""
    guidance, use_dc = RUNS[run]
    pipe = LatentSyncPipeline(unet, vae, make_ddim_scheduler())
    out = pipe.generate(faces, chunks, mask, num_inference_steps=20, guidance_scale=guidance, deepcache=use_dc, seed=SEED,
                        return_latents=True, return_float=True)  # fmt: skip
    assert out.faces.shape == (27, 3, RESOLUTION, RESOLUTION)
    assert [lat.shape[2] for lat in out.final_latents] == [16, 11]
    for j, lat in enumerate(out.final_latents):
        diff = (lat - golden[f"{run}.batch{j}.final_latents"]).abs().max().item()
        print(run, j, "final latents max diff", diff)
        assert diff <= 1e-3
    if run == "nodc":
        # frame 0 before the paste of SPEC 9.3: official decoded face pasted with the unmasked original pixels
        m = mask[0:1].float()
        pixels = faces_to_pixels(faces[0:1])
        want = golden["nodc.batch0.decoded_f0"] * (1 - m) + pixels * m
        diff = (out.faces_float[0:1] - want).abs().max().item()
        print("pasted face 0 max diff", diff)
        assert diff <= 1e-3
        got_u8, want_u8 = out.faces[0:1].int(), pixels_to_uint8(want).int()
        delta = (got_u8 - want_u8).abs()
        assert delta.max() <= 1 and (delta > 0).float().mean() < 1e-3
