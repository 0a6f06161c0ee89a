"""Noise schedules, training targets and sampling: diffusers' schedulers, our two-scale guidance.

Training uses a ``DDPMScheduler`` (``add_noise``, ``get_velocity``) built from ``[diffusion]``:
``beta_schedule`` (``scaled_linear``: Stable Diffusion's; ``squaredcos_cap_v2``: Nichol & Dhariwal),
``prediction_type`` (``epsilon`` or ``v_prediction``) and ``rescale_betas_zero_snr`` (Lin et al.
2023: the last step is pure noise). Sampling uses ``DDIMScheduler`` or ``EulerDiscreteScheduler``
from the same config with trailing timestep spacing (Lin et al.: the first step is always T-1; at
SNR 0 Euler starts from alpha_bar = 2^-24, diffusers' own clamp). Min-SNR-gamma weighting (Hang et
al. 2023) is computed from the scheduler's ``alphas_cumprod`` (defined at SNR 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .config import DiffusionConfig, SampleConfig
from .model import Cond


def scheduler_config(cfg: DiffusionConfig) -> dict[str, Any]:
    """The diffusers scheduler config of ``[diffusion]`` (also written by ``export-model``)."""
    return {
        "num_train_timesteps": cfg.timesteps, "beta_start": cfg.beta_start, "beta_end": cfg.beta_end,
        "beta_schedule": cfg.schedule, "prediction_type": "v_prediction" if cfg.prediction == "v" else "epsilon",
        "rescale_betas_zero_snr": cfg.zero_terminal_snr, "timestep_spacing": "trailing", "clip_sample": False,
        # Only "leading" spacing reads steps_offset; Stable Diffusion pipelines rewrite 0 to 1 with a
        # FutureWarning, so the export says 1 and loads as written.
        "steps_offset": 1,
    }  # fmt: skip


@dataclass
class Schedule:
    cfg: DiffusionConfig
    scheduler: Any  # diffusers DDPMScheduler: the training noise schedule

    @classmethod
    def create(cls, cfg: DiffusionConfig) -> Schedule:
        from diffusers import DDPMScheduler

        return cls(cfg, DDPMScheduler(**scheduler_config(cfg)))

    @property
    def T(self) -> int:
        return self.cfg.timesteps

    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.scheduler.alphas_cumprod

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.prediction == "epsilon":
            return noise
        return self.scheduler.get_velocity(x0, noise, t)  # v (Salimans & Ho 2022)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar.to(t.device)[t].double()
        return (ab / (1 - ab)).to(torch.float32)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample min-SNR-gamma weight (ones when gamma is 0)."""
        gamma = self.cfg.min_snr_gamma
        if gamma <= 0:
            return torch.ones(t.shape, device=t.device)
        snr = self.snr(t)
        if self.cfg.prediction == "v":
            return torch.clamp(snr, max=gamma) / (snr + 1)
        return torch.clamp(gamma / snr, max=1.0)  # = min(snr, gamma) / snr, defined at snr -> 0


def sampler(diffusion: DiffusionConfig, sample_cfg: SampleConfig):
    """A fresh diffusers sampling scheduler (they keep per-run state) on the training schedule."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    config = scheduler_config(diffusion)
    if sample_cfg.sampler == "ddim":
        return DDIMScheduler(**config, set_alpha_to_one=True)
    if sample_cfg.sampler == "euler":
        return EulerDiscreteScheduler(**{k: v for k, v in config.items() if k != "clip_sample"})
    raise ValueError(f"unknown sampler {sample_cfg.sampler!r}")


# A denoiser: (x_t, t, cond, sketch_scale) -> model output. Guidance calls it with conditions masked.
Denoiser = Callable[[torch.Tensor, torch.Tensor, Cond, torch.Tensor], torch.Tensor]


def guided(
    model: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: Cond, null: Cond,
    sketch_scale: float, guidance_tags: float, guidance_sketch: float,
) -> torch.Tensor:  # fmt: skip
    """Two-scale classifier-free guidance (as in InstructPix2Pix):
    out = u + g_sketch * (c_sketch - u) + g_tags * (c_both - c_sketch), where u has neither condition,
    c_sketch only the sketch, c_both both. Scales of 1 skip the passes they make unnecessary."""
    n = x.shape[0]
    on = torch.full((n,), float(sketch_scale), device=x.device)
    off = torch.zeros(n, device=x.device)
    if guidance_tags == 1.0 and guidance_sketch == 1.0:
        return model(x, t, cond, on)
    xs, ts = torch.cat([x, x, x]), torch.cat([t, t, t])
    out = model(xs, ts, Cond.cat([null, null, cond]), torch.cat([off, on, on]))
    u, c_sketch, c_both = out.chunk(3)
    return u + guidance_sketch * (c_sketch - u) + guidance_tags * (c_both - c_sketch)


def timesteps_for(diffusion: DiffusionConfig, sample_cfg: SampleConfig) -> list[int]:
    sched = sampler(diffusion, sample_cfg)
    sched.set_timesteps(max(1, min(sample_cfg.steps, diffusion.timesteps)))
    return [int(t) for t in sched.timesteps]


@torch.no_grad()
def sample(
    model: Denoiser, diffusion: DiffusionConfig, shape: tuple[int, ...], cond: Cond, null: Cond,
    cfg: SampleConfig, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
) -> torch.Tensor:  # fmt: skip
    """Draw samples of ``shape`` (N, C, H, W); returns x0 in the model's space (pixels in [-1, 1])."""
    sched = sampler(diffusion, cfg)
    sched.set_timesteps(max(1, min(cfg.steps, diffusion.timesteps)), device=device)
    x = torch.randn(shape, generator=generator, device="cpu").to(device) * sched.init_noise_sigma
    extra = {"eta": cfg.eta} if cfg.sampler == "ddim" else {}
    for t in sched.timesteps:
        tt = torch.full((shape[0],), int(t), dtype=torch.long, device=device)
        out = guided(model, sched.scale_model_input(x, t), tt, cond, null, cfg.sketch_scale,
                     cfg.guidance_tags, cfg.guidance_sketch)  # fmt: skip
        x = sched.step(out.float(), t, x, generator=generator, **extra).prev_sample
    return x


__all__ = ["Schedule", "guided", "sample", "sampler", "scheduler_config", "timesteps_for"]
