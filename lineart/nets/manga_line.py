"""MangaLineExtraction (Li, Liu, Wong, "Deep Extraction of Manga Structural Lines", SIGGRAPH 2017): ``manga_line``.

State-dict compatible with ``erika.pth`` (ljsabc/MangaLineExtraction_PyTorch ``res_skip``): a
pre-activation residual U-Net on one grey channel. Every conv unit is BatchNorm(eps 1e-3) ->
LeakyReLU(0.2) -> conv; an encoder of 5 residual stages (24, 48, 96, 192, 384 channels; 2, 3, 5,
7, 12 blocks; the last block of stages 1-4 strides 2), a decoder of 4 upsampling stages (nearest
x2 after the first conv of each) with identity skip additions, two more blocks at 16 channels, and
a 1x1 unit to one map of raw intensity (no sigmoid).

Processing follows comfyui_controlnet_aux ``LineartMangaDetector`` (the ControlNet-era wrapper;
huggingface/controlnet_aux has none) at its defaults: grey (OpenCV's RGB->grey rounding) 0..255
as float, sides padded (edge) to multiples of 64, output clipped to 0..255 and truncated. That
wrapper inverts it; this extractor returns the network's dark-on-white drawing.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from groundwork.checkpoints import WeightsSpec

from .base import NetSpec, register_net


class Unit(nn.Module):
    """BatchNorm -> LeakyReLU -> conv (-> nearest x2 when ``up``)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        layers = [nn.BatchNorm2d(cin, eps=1e-3), nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, k, stride, k // 2)]
        if up:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Shortcut(nn.Module):
    """Identity when the shape is kept, else a 1x1 conv (strided, or followed by nearest x2)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        self.model = None
        if cin != cout or stride != 1:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, stride)]
            if up:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x if self.model is None else self.model(x)) + y


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, up: bool = False) -> None:
        super().__init__()
        self.conv1 = Unit(cin, cout, 3, stride, up)
        self.residual = Unit(cout, cout)
        self.shortcut = Shortcut(cin, cout, stride, up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x, self.residual(self.conv1(x)))


class Stage(nn.Module):
    """``reps`` blocks; the last strides 2 when ``down``; the first upsamples when ``up``."""

    def __init__(self, cin: int, cout: int, reps: int, down: bool = False, up: bool = False) -> None:
        super().__init__()
        blocks = []
        for i in range(reps):
            stride = 2 if (down and i == reps - 1) else 1
            blocks.append(Block(cin if i == 0 else cout, cout, stride, up=(up and i == 0)))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ResSkip(nn.Module):
    """1 grey channel in, 1 intensity map out; input sides multiples of 16."""

    def __init__(self) -> None:
        super().__init__()
        self.block0 = Stage(1, 24, 2)
        self.block1 = Stage(24, 48, 3, down=True)
        self.block2 = Stage(48, 96, 5, down=True)
        self.block3 = Stage(96, 192, 7, down=True)
        self.block4 = Stage(192, 384, 12, down=True)
        self.block5 = Stage(384, 192, 7, up=True)
        self.block6 = Stage(192, 96, 5, up=True)
        self.block7 = Stage(96, 48, 3, up=True)
        self.block8 = Stage(48, 24, 2, up=True)
        self.block9 = Stage(24, 16, 2)
        self.conv15 = Unit(16, 1, k=1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ResSkip:
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.block0(x)
        x1 = self.block1(x0)
        x2 = self.block2(x1)
        x3 = self.block3(x2)
        y = self.block5(self.block4(x3)) + x3
        y = self.block6(y) + x2
        y = self.block7(y) + x1
        y = self.block8(y) + x0
        return self.conv15(self.block9(y))


def _grey(batch: np.ndarray) -> np.ndarray:
    """OpenCV's RGB->grey, as the reference: its fixed-point rounding differs between OpenCV versions."""
    return np.stack([cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in batch])[..., None]


def _encode(grey: torch.Tensor) -> torch.Tensor:
    return grey  # grey 0..255 as float, no normalisation


def _decode(y: torch.Tensor, **_: Any) -> torch.Tensor:
    return y[:, 0].clamp(0, 255).floor()


SPEC = register_net(
    NetSpec(
        name="manga_line",
        summary="MangaLineExtraction res_skip U-Net (erika.pth), manga structural lines",
        weights=WeightsSpec(
            "erika.pth",
            "https://huggingface.co/lllyasviel/Annotators/resolve/main/erika.pth",
            "badbd6baf013cefbd98993307b02cc14a26c770d067416e4fdecc8720b88feeb",
        ),
        build=ResSkip.from_state_dict,
        host_pre=_grey,
        encode=_encode,
        decode=_decode,
        multiple=64,
        pad_mode="replicate",
    )
)
