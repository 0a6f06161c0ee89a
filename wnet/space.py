"""Where diffusion happens: pixels (default) or the latent space of a diffusers AutoencoderKL.

Pixel space maps uint8 RGB to [-1, 1]. Latent space reads a local AutoencoderKL folder
(``config.json`` + weights: ``space.vae``, or the init base's VAE saved in ``RUN/components/vae``);
latents are the posterior mean multiplied by the VAE's ``scaling_factor``.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import torch


class SpaceError(ValueError):
    pass


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class PixelSpace:
    channels = 3
    stride = 1

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def to(self, device) -> PixelSpace:
        return self


class LatentSpace:
    """A frozen AutoencoderKL; encode uses the posterior mean so training targets are deterministic."""

    def __init__(self, path: str, device: str | torch.device = "cpu"):
        from diffusers import AutoencoderKL

        if not os.path.isfile(os.path.join(path, "config.json")):
            raise SpaceError(f"space.vae={path!r} is not a diffusers AutoencoderKL folder (no config.json)")
        self.vae = AutoencoderKL.from_pretrained(path).to(device).eval().requires_grad_(False)
        cfg = self.vae.config
        self.channels = int(cfg.latent_channels)
        self.stride = 2 ** (len(cfg.block_out_channels) - 1)
        self.scale = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)

    def to(self, device) -> LatentSpace:
        self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(pixels).latent_dist.mean * self.scale

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(x / self.scale).sample


def create_space(vae: str | None, device: str | torch.device = "cpu") -> PixelSpace | LatentSpace:
    return PixelSpace() if vae is None else LatentSpace(vae, device)


@functools.lru_cache(maxsize=8)
def _vae_config(vae: str) -> dict:
    try:
        with open(os.path.join(vae, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
        return {
            "stride": 2 ** (len(config["block_out_channels"]) - 1),
            "channels": int(config["latent_channels"]),
        }
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise SpaceError(f"space.vae={vae!r}: cannot read its config.json ({exc})") from None


def space_stride(vae: str | None) -> int:
    """Pixels per latent pixel: 1 in pixel space, 2^(levels-1) of the VAE's encoder otherwise."""
    return 1 if vae is None else _vae_config(vae)["stride"]


def vae_channels(vae: str | None) -> int:
    """Channels of the space: 3 (RGB pixels) or the VAE's latent channels."""
    return 3 if vae is None else _vae_config(vae)["channels"]


__all__ = [
    "LatentSpace", "PixelSpace", "SpaceError", "create_space", "images_to_tensor", "space_stride", "tensor_to_images",
    "vae_channels",
]  # fmt: skip
