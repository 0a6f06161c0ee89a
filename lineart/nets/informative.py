"""Informative Drawings generator (Chan, Durand, Isola, CVPR 2022): ``lineart`` and ``lineart_coarse``.

State-dict compatible with ControlNet's ``sk_model.pth`` / ``sk_model2.pth`` (carolineec/
informative-drawings ``Generator(3, 1, n_residual_blocks=3)``): a ResNet-style generator with
reflection padding and affine-free instance norm, so its state dict holds only conv weights.

Processing follows controlnet_aux ``LineartDetector`` at its defaults (``coarse=False`` picks
sk_model, ``coarse=True`` sk_model2): RGB /255, the sigmoid output x255 truncated. controlnet_aux
then inverts to white-on-black; this extractor returns the network's own dark-on-white drawing,
which is exactly 255 minus the reference. Sides are padded (reflect) to multiples of 4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from groundwork.checkpoints import WeightsSpec

from .base import NetSpec, register_net
from .layers import InstanceNorm


def _norm(c: int) -> nn.Module:
    return InstanceNorm(c)  # affine-free: nothing in the state dict


class ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class Generator(nn.Module):
    """3 -> 1 channels; 7x7 stem, two stride-2 downs, residual blocks, two transposed ups, 7x7 sigmoid head."""

    def __init__(self, n_residual_blocks: int = 3) -> None:
        super().__init__()
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), _norm(64), nn.ReLU(inplace=True)
        )
        self.model1 = nn.Sequential(
            nn.Conv2d(64, 128, 3, 2, 1), _norm(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 256, 3, 2, 1), _norm(256), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.model2 = nn.Sequential(*(ResidualBlock(256) for _ in range(n_residual_blocks)))
        self.model3 = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 3, 2, 1, output_padding=1), _norm(128), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(128, 64, 3, 2, 1, output_padding=1), _norm(64), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Generator:
        blocks = {k.split(".")[1] for k in state if k.startswith("model2.")}
        return cls(len(blocks) or 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def _encode(rgb: torch.Tensor) -> torch.Tensor:
    return rgb / 255.0


def _decode(y: torch.Tensor, **_: Any) -> torch.Tensor:
    return (y[:, 0] * 255.0).clamp(0, 255).floor()


def _spec(name: str, summary: str, weights: WeightsSpec) -> NetSpec:
    return NetSpec(
        name=name,
        summary=summary,
        weights=weights,
        build=Generator.from_state_dict,
        encode=_encode,
        decode=_decode,
        multiple=4,
        pad_mode="reflect",
    )


LINEART = register_net(
    _spec(
        "lineart",
        "Informative Drawings generator, ControlNet lineart (sk_model.pth)",
        WeightsSpec(
            "sk_model.pth",
            "https://huggingface.co/lllyasviel/Annotators/resolve/main/sk_model.pth",
            "c686ced2a666b4850b4bb6ccf0748031c3eda9f822de73a34b8979970d90f0c6",
        ),
    )
)
LINEART_COARSE = register_net(
    _spec(
        "lineart_coarse",
        "Informative Drawings generator, ControlNet lineart coarse (sk_model2.pth)",
        WeightsSpec(
            "sk_model2.pth",
            "https://huggingface.co/lllyasviel/Annotators/resolve/main/sk_model2.pth",
            "30a534781061f34e83bb9406b4335da4ff2616c95d22a585c1245aa8363e74e0",
        ),
    )
)
