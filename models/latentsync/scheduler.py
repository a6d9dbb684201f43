"""DDIM scheduler configured exactly as LatentSync's ``configs/scheduler_config.json`` (SPEC section 7).

betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 (float32), ``set_alpha_to_one=False`` (final alpha =
alphas_cumprod[0] = 0.99915), ``steps_offset=1``, "leading" spacing -> 20 steps: 951, 901, ..., 51, 1. eta is 0,
so a step draws no random numbers; ``scale_model_input`` is the identity and ``init_noise_sigma`` is 1.

Optional faster sampler (off by default): DPM-Solver++ (2nd order multistep, `diffusers.DPMSolverMultistepScheduler`)
on the same betas ("trailing" timestep spacing, see `DPMPP_CONFIG`), typically at 10 steps. It is deterministic (no noise is drawn), keeps a
history of model outputs (reset by ``set_timesteps``) and ends at sigma 0. Its quality against the 20-step DDIM
output is measured by ``bench/engine_throughput.py`` (PSNR/SSIM of the generated mouth crops).
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

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


# The DDIM betas / spacing above; the DDIM-only keys (clip_sample, set_alpha_to_one) do not exist here.
DPMPP_CONFIG: dict = {
    **{k: SCHEDULER_CONFIG[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                                        "prediction_type", "thresholding", "steps_offset", "rescale_betas_zero_snr")},
    # "trailing" starts at t = 999 (10 steps: 999, 899, ..., 99): "leading" would start a 10-step run at 901 from
    # pure noise. The DDIM keeps the official "leading" spacing.
    "timestep_spacing": "trailing",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": True,
    "final_sigmas_type": "zero",
}
SCHEDULERS = ("ddim", "dpmpp")
DEFAULT_STEPS = {"ddim": 20, "dpmpp": 10}


def make_ddim_scheduler() -> DDIMScheduler:
    """A fresh `diffusers.DDIMScheduler` with the official LatentSync configuration."""
    return DDIMScheduler(**SCHEDULER_CONFIG)


def make_dpmpp_scheduler() -> DPMSolverMultistepScheduler:
    """A fresh DPM-Solver++ (order 2, multistep) scheduler on the official betas."""
    return DPMSolverMultistepScheduler(**DPMPP_CONFIG)


def make_scheduler(name: str = "ddim") -> DDIMScheduler | DPMSolverMultistepScheduler:
    """``"ddim"`` (official, default) or ``"dpmpp"`` (DPM-Solver++, optional faster sampler)."""
    if name == "ddim":
        return make_ddim_scheduler()
    if name == "dpmpp":
        return make_dpmpp_scheduler()
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {name!r}")


def timesteps_for(num_inference_steps: int) -> list[int]:
    """The timestep list for ``num_inference_steps`` (without mutating any shared scheduler)."""
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(num_inference_steps)
    return [int(t) for t in scheduler.timesteps]


__all__ = ["DEFAULT_STEPS", "DPMPP_CONFIG", "SCHEDULERS", "SCHEDULER_CONFIG", "make_ddim_scheduler", "make_dpmpp_scheduler",
           "make_scheduler", "timesteps_for"]
