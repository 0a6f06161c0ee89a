"""Noise schedules, training targets and weights, and the DDIM / Euler samplers with two guidance scales.

Schedules (1000 steps by default):
- ``scaled_linear``: Stable Diffusion's betas, linear in sqrt(beta) from 0.00085 to 0.012;
- ``cosine``: Nichol & Dhariwal 2021, alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), s = 0.008.
``zero_terminal_snr`` rescales sqrt(alpha_bar) so the last step is pure noise (Lin et al. 2023, Alg. 1).
Min-SNR-gamma weighting: Hang et al. 2023 (min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .config import DiffusionConfig, SampleConfig

# The smallest alpha_bar the Euler sampler starts from when the schedule ends at SNR 0 (sigma would be
# infinite); diffusers' EulerDiscreteScheduler uses the same value.
EULER_MIN_ALPHA_BAR = 2.0**-24


def betas_for(cfg: DiffusionConfig) -> torch.Tensor:
    T = cfg.timesteps
    if cfg.schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
    elif cfg.schedule == "cosine":
        s = 0.008
        f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if cfg.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so that it is 0 at the last step and unchanged at the first."""
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


@dataclass
class Schedule:
    cfg: DiffusionConfig
    alpha_bar: torch.Tensor  # float64, one per timestep

    @classmethod
    def create(cls, cfg: DiffusionConfig) -> Schedule:
        return cls(cfg, torch.cumprod(1 - betas_for(cfg), 0))

    @property
    def T(self) -> int:
        return self.cfg.timesteps

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar.to(like.device)[t].to(torch.float32)
        return ab.view(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self._ab(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cfg.prediction == "epsilon":
            return noise
        ab = self._ab(t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0  # v (Salimans & Ho 2022)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar.to(t.device)[t]
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

    def split(
        self, pred: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output at noise level ``ab`` -> (x0, epsilon)."""
        a, s = ab.sqrt(), (1 - ab).sqrt()
        if self.cfg.prediction == "v":
            return a * x_t - s * pred, s * x_t + a * pred
        x0 = (x_t - s * pred) / a.clamp(min=1e-8)
        return x0, pred


# A denoiser: (x_t, t, tag_ids, sketch_scale) -> model output. Guidance calls it with conditions masked.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guided(
    model: Denoiser, x: torch.Tensor, t: torch.Tensor, tags: torch.Tensor, null_tags: torch.Tensor,
    sketch_scale: float, guidance_tags: float, guidance_sketch: float,
) -> torch.Tensor:  # fmt: skip
    """Two-scale classifier-free guidance (as in InstructPix2Pix):
    out = u + g_sketch * (c_sketch - u) + g_tags * (c_both - c_sketch), where u has neither condition,
    c_sketch only the sketch, c_both both. Scales of 1 and 0 skip the passes they make unnecessary."""
    n = x.shape[0]
    on = torch.full((n,), float(sketch_scale), device=x.device)
    off = torch.zeros(n, device=x.device)
    if guidance_tags == 1.0 and guidance_sketch == 1.0:
        return model(x, t, tags, on)
    xs, ts = torch.cat([x, x, x]), torch.cat([t, t, t])
    out = model(xs, ts, torch.cat([null_tags, null_tags, tags]), torch.cat([off, on, on]))
    u, c_sketch, c_both = out.chunk(3)
    return u + guidance_sketch * (c_sketch - u) + guidance_tags * (c_both - c_sketch)


def timesteps_for(schedule: Schedule, steps: int) -> list[int]:
    """Trailing spacing (Lin et al. 2023): always starts at the last timestep, T-1."""
    T = schedule.T
    steps = max(1, min(steps, T))
    return sorted({round(T - 1 - i * T / steps) for i in range(steps)}, reverse=True)


@torch.no_grad()
def sample(
    model: Denoiser, schedule: Schedule, shape: tuple[int, ...], tags: torch.Tensor, null_tags: torch.Tensor,
    cfg: SampleConfig, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
) -> torch.Tensor:  # fmt: skip
    """Draw samples of ``shape`` (N, C, H, W); returns x0 in the model's space (pixels in [-1, 1])."""
    steps = timesteps_for(schedule, cfg.steps)
    x = torch.randn(shape, generator=generator, device="cpu").to(device)
    ab_all = schedule.alpha_bar.to(torch.float32).to(device)

    def predict(x_t: torch.Tensor, t: int, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        out = guided(
            model, x_t, tt, tags, null_tags, cfg.sketch_scale, cfg.guidance_tags, cfg.guidance_sketch
        )
        return schedule.split(out.float(), x_t, ab)

    if cfg.sampler == "ddim":
        for i, t in enumerate(steps):
            ab = ab_all[t]
            x0, eps = predict(x, t, ab)
            ab_next = ab_all[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0, device=device)
            sigma = cfg.eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).clamp(min=0).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next - sigma**2).clamp(min=0).sqrt() * eps
            if cfg.eta > 0 and i + 1 < len(steps):
                x = x + sigma * torch.randn(shape, generator=generator).to(device)
        return x
    if cfg.sampler == "euler":
        # Euler on the probability-flow ODE in the variance-exploding parametrisation
        # (Karras et al. 2022): z = x / sqrt(alpha_bar), sigma = sqrt((1 - ab) / ab).
        ab_clamped = ab_all.clamp(min=EULER_MIN_ALPHA_BAR)
        sigmas = [((1 - ab_clamped[t]) / ab_clamped[t]).sqrt() for t in steps] + [
            torch.tensor(0.0, device=device)
        ]
        z = x * sigmas[0]
        for i, t in enumerate(steps):
            ab = ab_clamped[t]
            x0, _ = predict(z * ab.sqrt(), t, ab)
            d = (z - x0) / sigmas[i]
            z = z + d * (sigmas[i + 1] - sigmas[i])
        return z
    raise ValueError(f"unknown sampler {cfg.sampler!r}")


__all__ = ["Schedule", "betas_for", "guided", "rescale_zero_terminal_snr", "sample", "timesteps_for"]
