"""DDIM scheduler configured exactly as LatentSync's ``configs/scheduler_config.json`` (SPEC section 7).

betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 (float32), ``set_alpha_to_one=False`` (final alpha =
alphas_cumprod[0] = 0.99915), ``steps_offset=1``, "leading" spacing -> 20 steps: 951, 901, ..., 51, 1. eta is 0,
so a step draws no random numbers; ``scale_model_input`` is the identity and ``init_noise_sigma`` is 1.
"""

from __future__ import annotations

from diffusers import DDIMScheduler

SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


def make_ddim_scheduler() -> DDIMScheduler:
    """A fresh `diffusers.DDIMScheduler` with the official LatentSync configuration."""
    return DDIMScheduler(**SCHEDULER_CONFIG)


def timesteps_for(num_inference_steps: int) -> list[int]:
    """The timestep list for ``num_inference_steps`` (without mutating any shared scheduler)."""
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(num_inference_steps)
    return [int(t) for t in scheduler.timesteps]


__all__ = ["SCHEDULER_CONFIG", "make_ddim_scheduler", "timesteps_for"]
