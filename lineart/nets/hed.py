"""ControlNet's HED (lllyasviel's Apache-2.0 re-training, ``ControlNetHED.pth``): ``hed``.

A VGG-style trunk of five conv blocks (2, 2, 3, 3, 3 convs; widths 64..512; 2x2 max-pool before
blocks 2-5), each with a 1x1 projection to one logit map. There is no learned fusion: the maps are
resized to the input size (bilinear), averaged and passed through a sigmoid. The input is raw RGB
0..255 minus a learned per-channel ``norm``. The public file is fp16; it is loaded as fp32.

Processing follows controlnet_aux ``HEDdetector`` at its defaults (``safe=False``,
``scribble=False``): sigmoid(mean) x255, truncated, inverted here so that ink is 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.checkpoints import WeightsSpec

from .base import NetSpec, register_net


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n))
        )
        self.projection = nn.Conv2d(cout, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class ControlNetHED(nn.Module):
    """Returns the five side logit maps at their own resolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = ConvBlock(3, 64, 2)
        self.block2 = ConvBlock(64, 128, 2)
        self.block3 = ConvBlock(128, 256, 3)
        self.block4 = ConvBlock(256, 512, 3)
        self.block5 = ConvBlock(512, 512, 3)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ControlNetHED:
        return cls()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm
        maps = []
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4, self.block5)):
            if i:
                h = F.max_pool2d(h, 2, 2)
            h, p = block(h)
            maps.append(p)
        return maps


def _encode(rgb: torch.Tensor) -> torch.Tensor:
    return rgb


def _decode(maps: list[torch.Tensor], safe: bool = False, **_: Any) -> torch.Tensor:
    size = maps[0].shape[-2:]
    up = [
        m if m.shape[-2:] == size else F.interpolate(m, size, mode="bilinear", align_corners=False)
        for m in maps
    ]
    edge = torch.sigmoid(torch.cat(up, 1).mean(1))
    if safe:
        edge = torch.floor(edge * 3.0) / 2.0
    return 255.0 - (edge * 255.0).clamp(0, 255).floor()


SPEC = register_net(
    NetSpec(
        name="hed",
        summary="HED edges, ControlNet's Apache-2.0 re-training (ControlNetHED.pth)",
        weights=WeightsSpec(
            "ControlNetHED.pth",
            "https://huggingface.co/lllyasviel/Annotators/resolve/main/ControlNetHED.pth",
            "5ca93762ffd68a29fee1af9d495bf6aab80ae86f08905fb35472a083a4c7a8fa",
        ),
        build=ControlNetHED.from_state_dict,
        encode=_encode,
        decode=_decode,
        options={"safe": False},
    )
)
