"""Anime2Sketch U-Net (Xiang et al., WACV 2022): ``lineart_anime``.

State-dict compatible with ControlNet's ``netG.pth``: the pix2pix ``UnetGenerator(3, 1,
num_downs=8, ngf=64)`` with affine-free instance norm (so every conv has a bias), nested skip
blocks whose keys read ``model.model.1.model.3...``.

Processing follows controlnet_aux ``LineartAnimeDetector`` at its defaults: the image is resized
(bicubic) to multiples of 256, fed as RGB in [-1, 1]; the tanh output x127.5 + 127.5 is resized
back (bicubic), clipped and truncated. controlnet_aux then inverts it; this extractor returns
the network's own dark-on-white drawing, exactly 255 minus the reference.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import nn

from groundwork.checkpoints import WeightsSpec

from .base import NetExtractor, NetSpec, register_net, to_uint8
from .layers import InstanceNorm


class SkipBlock(nn.Module):
    """down -> inner block -> up, concatenated with the input (except at the outermost level)."""

    def __init__(
        self, outer: int, inner: int, sub: SkipBlock | None = None, in_ch: int | None = None
    ) -> None:
        super().__init__()
        self.outermost = in_ch is not None
        if self.outermost:
            layers = [
                nn.Conv2d(in_ch, inner, 4, 2, 1),
                sub,
                nn.ReLU(),
                nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1),
                nn.Tanh(),
            ]
        elif (
            sub is None
        ):  # innermost: no norm after the bottleneck conv, no concatenated input to the up conv
            layers = [nn.LeakyReLU(0.2), nn.Conv2d(outer, inner, 4, 2, 1), nn.ReLU(),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1), InstanceNorm(outer)]  # fmt: skip
        else:
            layers = [nn.LeakyReLU(0.2), nn.Conv2d(outer, inner, 4, 2, 1), InstanceNorm(inner), sub, nn.ReLU(),
                      nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), InstanceNorm(outer)]  # fmt: skip
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    """8 stride-2 levels, channels 64-128-256-512-512-512-512-512; input sides multiples of 256."""

    def __init__(self, ngf: int = 64, num_downs: int = 8) -> None:
        super().__init__()
        block = SkipBlock(ngf * 8, ngf * 8)
        for _ in range(num_downs - 5):
            block = SkipBlock(ngf * 8, ngf * 8, block)
        for mult in (4, 2, 1):
            block = SkipBlock(ngf * mult, ngf * mult * 2, block)
        self.model = SkipBlock(1, ngf, block, in_ch=3)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> UnetGenerator:
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _infer(ext: NetExtractor, batch: np.ndarray) -> np.ndarray:
    h, w = batch.shape[1:3]
    hn, wn = 256 * math.ceil(h / 256), 256 * math.ceil(w / 256)
    resized = (hn, wn) != (h, w)
    if resized:  # the reference resizes rather than pads; cv2 on uint8 keeps its rounding
        batch = np.stack([cv2.resize(img, (wn, hn), interpolation=cv2.INTER_CUBIC) for img in batch])
    with torch.inference_mode():
        y = ext.run_model(ext.to_tensor(batch) / 127.5 - 1.0)[:, 0] * 127.5 + 127.5
        if not resized:
            return to_uint8(y)
        y = y.cpu().numpy()
    y = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_CUBIC) for m in y])
    return np.clip(y, 0, 255).astype(np.uint8)


SPEC = register_net(
    NetSpec(
        name="lineart_anime",
        summary="Anime2Sketch U-Net, ControlNet lineart_anime (netG.pth); sides resized to multiples of 256",
        weights=WeightsSpec(
            "netG.pth",
            "https://huggingface.co/lllyasviel/Annotators/resolve/main/netG.pth",
            "ccabdcc3f5cf3c07cf65d58776acb21df7dfda825cdc70c9766a93fd62bfc488",
        ),
        build=UnetGenerator.from_state_dict,
        infer=_infer,
    )
)
