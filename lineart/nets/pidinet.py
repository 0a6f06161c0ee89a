"""PiDiNet (Su et al., "Pixel Difference Networks for Efficient Edge Detection", ICCV 2021).

State-dict compatible with hellozhuo/pidinet's ``table5_pidinet*.pth`` files (the full one is the
ControlNet softedge annotator). Width, dilation width and attention are read from the checkpoint,
so the tiny/small/-l variants load too; the pixel-difference pattern is "carv4" (cd, ad, rd, cv
repeated), which every table5 PiDiNet uses.

Pixel-difference convolutions are linear in their 3x3 weight, so each folds into a plain
convolution (cd and ad into 3x3, rd into a 5x5 with padding 2): ``fold`` does that once after
loading, which is what the ``fold=True`` option (default) runs.

Processing follows controlnet_aux ``PidiNetDetector`` at its defaults: RGB -> BGR, /255, no mean;
the fused map (already sigmoided) x255, truncated; here inverted so that ink is 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from groundwork.checkpoints import WeightsSpec

from .base import NetSpec, register_net

CARV4 = ("cd", "ad", "rd", "cv") * 4

# Angular difference: each tap minus its clockwise neighbour (flattened 3x3 indices).
_AD_NEIGHBOUR = [3, 0, 1, 6, 4, 2, 7, 8, 5]
# Radial difference: the 8 outer taps of a 5x5 take +w, the 8 inner ring taps take -w (centre 0).
_RD_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]
_RD_INNER = [6, 7, 8, 11, 13, 16, 17, 18]


def pdc_kernel(weight: torch.Tensor, op: str) -> tuple[torch.Tensor, int]:
    """The plain-convolution kernel (and its padding) equal to pixel-difference op ``op`` with ``weight``."""
    o, i = weight.shape[:2]
    if op == "cv":
        return weight, 1
    if op == "cd":  # sum_k w_k (x_k - x_centre): subtract the weight sum at the centre tap
        kernel = weight.clone()
        kernel[:, :, 1, 1] -= weight.sum(dim=(2, 3))
        return kernel, 1
    flat = weight.reshape(o, i, 9)
    if op == "ad":
        return (flat - flat[:, :, _AD_NEIGHBOUR]).reshape(weight.shape), 1
    if op == "rd":
        kernel = weight.new_zeros(o, i, 25)
        kernel[:, :, _RD_OUTER] = flat[:, :, 1:]
        kernel[:, :, _RD_INNER] = -flat[:, :, 1:]
        return kernel.reshape(o, i, 5, 5), 2
    raise ValueError(f"unknown pixel-difference op {op!r}")


class PixelDifferenceConv(nn.Module):
    """A 3x3 convolution whose taps act on pixel differences; no bias (as in every PiDiNet)."""

    def __init__(self, op: str, cin: int, cout: int, groups: int = 1) -> None:
        super().__init__()
        self.op, self.groups = op, groups
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, pad = pdc_kernel(self.weight, self.op)
        return F.conv2d(x, kernel, None, 1, pad, 1, self.groups)

    def folded(self) -> nn.Conv2d:
        kernel, pad = pdc_kernel(self.weight.detach(), self.op)
        out_c, in_c = kernel.shape[0], kernel.shape[1] * self.groups
        conv = nn.Conv2d(in_c, out_c, kernel.shape[-1], padding=pad, groups=self.groups, bias=False)
        conv.weight.data.copy_(kernel)
        return conv


class PDCBlock(nn.Module):
    """Depthwise PDC -> ReLU -> 1x1, plus the input (max-pooled and 1x1-projected when striding)."""

    def __init__(self, op: str, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(cin, cout, 1)
        self.conv1 = PixelDifferenceConv(op, cin, cin, groups=cin)
        self.conv2 = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        # In place on fresh conv outputs: these maps are large and memory-bound on CPU.
        y = self.conv2(self.conv1(x).relu_())
        return y.add_(self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """Compact dilation module: 1x1 reduction, then four dilated 3x3 (5, 7, 9, 11) summed."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        for j, d in enumerate((5, 7, 9, 11), 1):
            setattr(self, f"conv2_{j}", nn.Conv2d(cout, cout, 3, dilation=d, padding=d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return self.conv2_1(x).add_(self.conv2_2(x)).add_(self.conv2_3(x)).add_(self.conv2_4(x))


class CSAM(nn.Module):
    """Compact spatial attention: x * sigmoid(conv3x3(conv1x1(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Returns the fused edge probability, N x 1 x H x W (the side maps are not needed at inference)."""

    def __init__(
        self, width: int = 60, dil: int | None = 24, sa: bool = True, ops: tuple[str, ...] = CARV4
    ) -> None:
        super().__init__()
        c = width
        self.init_block = PixelDifferenceConv(ops[0], 3, c)
        stages = [(c, c, 3), (c, 2 * c, 4), (2 * c, 4 * c, 4), (4 * c, 4 * c, 4)]
        layer = 1
        for s, (cin, cout, n) in enumerate(stages, 1):
            for j in range(1, n + 1):
                stride = 2 if (j == 1 and s > 1) else 1
                setattr(self, f"block{s}_{j}", PDCBlock(ops[layer], cin if j == 1 else cout, cout, stride))
                layer += 1
        planes = [c, 2 * c, 4 * c, 4 * c]
        self.stage_blocks = [3, 4, 4, 4]
        reduce_in = [dil] * 4 if dil is not None else planes
        if dil is not None:
            self.dilations = nn.ModuleList(CDCM(p, dil) for p in planes)
        if sa:
            self.attentions = nn.ModuleList(CSAM(r) for r in reduce_in)
        self.conv_reduces = nn.ModuleList(MapReduce(r) for r in reduce_in)
        self.classifier = nn.Conv2d(4, 1, 1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> PiDiNet:
        if "init_block.weight" not in state:
            return cls()  # let the strict load report the mismatch
        dil = state["dilations.0.conv1.weight"].shape[0] if "dilations.0.conv1.weight" in state else None
        return cls(state["init_block.weight"].shape[0], dil, "attentions.0.conv1.weight" in state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.init_block(x)
        feats = []
        for s, n in enumerate(self.stage_blocks, 1):
            for j in range(1, n + 1):
                x = getattr(self, f"block{s}_{j}")(x)
            feats.append(x)
        maps = []
        for i, f in enumerate(feats):
            if hasattr(self, "dilations"):
                f = self.dilations[i](f)
            if hasattr(self, "attentions"):
                f = self.attentions[i](f)
            e = self.conv_reduces[i](f)
            maps.append(F.interpolate(e, (h, w), mode="bilinear", align_corners=False) if i else e)
        return torch.sigmoid(self.classifier(torch.cat(maps, 1)))

    def fold(self) -> PiDiNet:
        """Replace every pixel-difference conv by the equivalent plain conv (inference only)."""
        for module in list(self.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, PixelDifferenceConv):
                    setattr(module, child_name, child.folded())
        return self


def _encode(rgb: torch.Tensor) -> torch.Tensor:
    return rgb.flip(1) / 255.0  # the ControlNet annotator feeds BGR in 0..1


def _decode(fused: torch.Tensor, safe: bool = False, apply_filter: bool = False, **_: Any) -> torch.Tensor:
    edge = fused[:, 0]
    if apply_filter:
        edge = (edge > 0.5).float()
    if safe:
        edge = torch.floor(edge * 3.0) / 2.0
    return 255.0 - (edge * 255.0).clamp(0, 255).floor()


def _prepare(model: PiDiNet, options: dict[str, Any]) -> PiDiNet:
    return model.fold() if options["fold"] else model


SPEC = register_net(
    NetSpec(
        name="pidinet",
        summary="PiDiNet edges (table5_pidinet.pth, the ControlNet softedge annotator); PDCs folded into plain convs",
        weights=WeightsSpec(
            "table5_pidinet.pth",
            "https://huggingface.co/lllyasviel/Annotators/resolve/main/table5_pidinet.pth",
            "80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c",
        ),
        build=PiDiNet.from_state_dict,
        encode=_encode,
        decode=_decode,
        options={"safe": False, "apply_filter": False, "fold": True},
        prepare=_prepare,
    )
)
