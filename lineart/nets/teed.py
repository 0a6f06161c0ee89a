"""TEED, the Tiny and Efficient Edge Detector (Soria et al., ICCV Workshops 2023), and MTEED.

One module for two registry names: ``teed`` (xavysp/TEED ``5_model.pth``, as mirrored for
controlnet_aux) and ``mteed`` (TheMisto.ai's ``MTEED.pth``, Anyline's fine-tune of the same
network; identical state dict).

Processing follows controlnet_aux ``TEEDdetector`` at its defaults: raw RGB 0..255 (no mean, no
/255), the four logit maps averaged, sigmoid, ``safe_step`` with 2 steps, x255, truncated; here
inverted so that ink is 0. Sides are padded (edge) to multiples of 8, as the network needs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.checkpoints import WeightsSpec

from .base import NetSpec, register_net


def smish(x: torch.Tensor) -> torch.Tensor:
    """x * tanh(log(1 + sigmoid(x))); without autograd, in place on one new tensor (memory-bound on CPU)."""
    s = torch.sigmoid(x)
    if torch.is_grad_enabled():
        return x * torch.tanh(torch.log1p(s))
    return s.add_(1.0).log_().tanh_().mul_(x)


class DoubleConv(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.act = act
        self.conv1 = nn.Conv2d(cin, mid, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(mid, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(smish(self.conv1(x)))
        return smish(x) if self.act else x


class SingleConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DenseLayer(nn.Module):
    """(x1, x2) -> 0.5 * (conv(smish(conv_pad2(smish(x1)))) + x2): the padding 2 then 0 keeps the size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=2)
        self.conv2 = nn.Conv2d(cout, cout, 3)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.conv2(smish(self.conv1(smish(x1)))) + x2)


class DenseBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.denselayer1 = DenseLayer(cin, cout)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.denselayer1(x1, x2)


class _Smish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smish(x)


class UpConv(nn.Module):
    """``steps`` x [1x1 conv, smish, transposed conv x2]; 16 channels inside, 1 at the end."""

    _PAD = {1: 0, 2: 1}

    def __init__(self, cin: int, steps: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        k = 2**steps
        for i in range(steps):
            cout = 1 if i == steps - 1 else 16
            layers += [
                nn.Conv2d(cin, cout, 1),
                _Smish(),
                nn.ConvTranspose2d(cout, cout, k, 2, self._PAD[steps]),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class DoubleFusion(nn.Module):
    """Two depthwise 3x3 convs over the three side maps, summed to one map."""

    def __init__(self) -> None:
        super().__init__()
        self.DWconv1 = nn.Conv2d(3, 24, 3, padding=1, groups=3)
        self.DWconv2 = nn.Conv2d(24, 24, 3, padding=1, groups=24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # smish(sum_c(a + DWconv2(smish(a)))) with a = DWconv1(smish(x)). A channel sum of depthwise
        # outputs is one dense conv to a single channel, so neither the second 24-channel map nor
        # the sum is materialised: same maths, a third of the full-resolution memory traffic.
        sx = smish(x)
        a = self.DWconv1(sx)
        w1, b1 = self.DWconv1.weight, self.DWconv1.bias  # (24, 1, 3, 3): output c reads input c // 8
        w1_sum = w1.reshape(3, 8, 1, 3, 3).sum(1).reshape(1, 3, 3, 3)
        w2 = self.DWconv2.weight.reshape(1, 24, 3, 3)
        bias = (b1.sum() + self.DWconv2.bias.sum()).reshape(1)
        y = F.conv2d(sx, w1_sum, None, padding=1) + F.conv2d(smish(a), w2, bias, padding=1)
        return smish(y)


class TED(nn.Module):
    """Returns the four logit maps (three sides, fused), each N x 1 x H x W."""

    def __init__(self) -> None:
        super().__init__()
        self.block_1 = DoubleConv(3, 16, 16, stride=2)
        self.block_2 = DoubleConv(16, 32, 32, act=False)
        self.dblock_3 = DenseBlock(32, 48)
        self.side_1 = SingleConv(16, 32, 2)
        self.pre_dense_3 = SingleConv(32, 48, 1)
        self.up_block_1 = UpConv(16, 1)
        self.up_block_2 = UpConv(32, 1)
        self.up_block_3 = UpConv(48, 2)
        self.block_cat = DoubleFusion()

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> TED:
        return cls()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b1 = self.block_1(x)
        b2 = self.block_2(b1)
        b2_down = F.max_pool2d(b2, 3, 2, 1)
        b3 = self.dblock_3(b2_down + self.side_1(b1), self.pre_dense_3(b2_down))
        outs = [self.up_block_1(b1), self.up_block_2(b2), self.up_block_3(b3)]
        outs.append(self.block_cat(torch.cat(outs, 1)))
        return outs


def _encode(rgb: torch.Tensor) -> torch.Tensor:
    return rgb  # controlnet_aux feeds raw 0..255 RGB


def _decode(maps: list[torch.Tensor], safe_steps: int = 2, **_: Any) -> torch.Tensor:
    edge = torch.sigmoid(torch.stack(maps).mean(0)[:, 0])
    if safe_steps:
        edge = torch.floor(edge * (safe_steps + 1)) / safe_steps
    return 255.0 - (edge * 255.0).clamp(0, 255).floor()


def _spec(name: str, summary: str, weights: WeightsSpec) -> NetSpec:
    return NetSpec(
        name=name,
        summary=summary,
        weights=weights,
        build=TED.from_state_dict,
        encode=_encode,
        decode=_decode,
        multiple=8,
        options={"safe_steps": 2},
    )


TEED = register_net(
    _spec(
        "teed",
        "TEED edges (xavysp/TEED 5_model.pth; no pinned hash, so never downloaded automatically)",
        WeightsSpec("5_model.pth", "https://huggingface.co/fal-ai/teed/resolve/main/5_model.pth", None),
    )
)
MTEED = register_net(
    _spec(
        "mteed",
        "MTEED line art (Anyline's MTEED.pth, TEED network)",
        WeightsSpec(
            "MTEED.pth",
            "https://huggingface.co/TheMistoAI/MistoLine/resolve/main/Anyline/MTEED.pth",
            "a3c2d8a8ce9422555c787160bd46362d761325a565333c0e3f6a53e0bae2abdb",
        ),
    )
)
