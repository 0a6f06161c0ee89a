"""W-net: diffusers' UNet2DConditionModel plus our sketch encoder, entering it through both doors.

The sketch encoder is our own conv stack (``model.sketch_channels`` wide, ``model.sketch_blocks``
deep per level; it may be larger than the UNet, as the seed's is); it yields one feature map per
UNet resolution level. Its maps enter the UNet through the two doors diffusers opens
(``wnet.unet.door_shapes``): into the encoder path (``down_intrablock_additional_residuals``,
T2I-Adapter style) and into every skip connection and the middle block
(``down_block_additional_residuals``, ``mid_block_additional_residual``, ControlNet style). Every
entry goes through its own connection layer, a 1x1 convolution initialised to zero, so at step 0
the W-net computes exactly the UNet it was loaded with; a per-sample ``sketch_scale`` multiplies all
of them (0 = no sketch: sketch dropout and sketch guidance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig, WnetConfigError
from .unet import Doors, door_shapes, make_unet


def zero_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        return self.skip(x) + self.conv2(self.act(self.norm2(h)))


class SketchEncoder(nn.Module):
    """Inverted line drawing (N x 1 x H x W, lines 1 on 0) -> one feature map per UNet level.

    ``stride`` is the space's downsampling (1 in pixel space, the VAE factor in latent space), so
    that level 0's map has the UNet input's size."""

    def __init__(self, cfg: ModelConfig, levels: int, stride: int = 1):
        super().__init__()
        widths = cfg.sketch_channels
        if len(widths) != levels:
            raise WnetConfigError(
                f"model.sketch_channels has {len(widths)} widths; the UNet has {levels} levels: give one per level"
            )
        # Pixel space: a 3x3 conv; latent space: a patchifying conv down to the latent grid.
        stem = (
            nn.Conv2d(1, widths[0], 3, padding=1)
            if stride == 1
            else nn.Conv2d(1, widths[0], stride, stride=stride)
        )
        self.stem = nn.Sequential(stem, nn.SiLU())
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.grad_checkpointing = False
        cin = widths[0]
        for i, w in enumerate(widths):
            self.levels.append(
                nn.ModuleList(
                    [ResBlock(cin if j == 0 else w, w, cfg.groups) for j in range(cfg.sketch_blocks)]
                )
            )
            self.downs.append(
                nn.Conv2d(w, w, 3, stride=2, padding=1) if i + 1 < len(widths) else nn.Identity()
            )
            cin = w

    def forward(self, sketch: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(sketch)
        feats = []
        for blocks, down in zip(self.levels, self.downs, strict=True):
            for block in blocks:
                if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    h = checkpoint(block, h, use_reentrant=False)
                else:
                    h = block(h)
            feats.append(h)
            h = down(h)
        return feats


class Connections(nn.Module):
    """The connection layers: a zero-initialised 1x1 conv per tensor a door takes."""

    def __init__(self, doors: Doors, sketch_channels: tuple[int, ...], which: tuple[str, ...]):
        super().__init__()
        self.doors, self.which = doors, tuple(which)
        sk = sketch_channels
        self.adapter = nn.ModuleList(
            [zero_conv(sk[s.level], s.channels) for s in doors.adapter] if "adapter" in which else []
        )
        self.skips = nn.ModuleList(
            [zero_conv(sk[s.level], s.channels) for s in doors.skips] if "skips" in which else []
        )
        self.mid = zero_conv(sk[doors.mid.level], doors.mid.channels) if "skips" in which else None

    def forward(self, feats: list[torch.Tensor], scale: torch.Tensor) -> dict[str, Any]:
        """diffusers' keyword arguments for the UNet: the residuals of each open door, times ``scale``."""
        s = scale.view(-1, 1, 1, 1)
        out: dict[str, Any] = {}
        if len(self.adapter):
            out["down_intrablock_additional_residuals"] = [
                conv(feats[slot.level]) * s.to(feats[slot.level].dtype)
                for conv, slot in zip(self.adapter, self.doors.adapter, strict=True)
            ]
        if len(self.skips):
            out["down_block_additional_residuals"] = tuple(
                conv(feats[slot.level]) * s.to(feats[slot.level].dtype)
                for conv, slot in zip(self.skips, self.doors.skips, strict=True)
            )
            mid = feats[self.doors.mid.level]
            out["mid_block_additional_residual"] = self.mid(mid) * s.to(mid.dtype)
        return out


@dataclass
class Cond:
    """What the UNet is conditioned on besides the sketch: the cross-attention context and, by UNet,
    a mask over it, a class embedding input (pooled tags) or SDXL's added embeddings."""

    hidden: torch.Tensor  # N x tokens x cross_attention_dim
    mask: torch.Tensor | None = None  # N x tokens, 1 = attend
    class_labels: torch.Tensor | None = None
    added: dict[str, torch.Tensor] | None = None  # SDXL: text_embeds (pooled), time_ids

    @staticmethod
    def cat(parts: list[Cond]) -> Cond:
        def join(values):
            return None if values[0] is None else torch.cat(values)

        added = None
        if parts[0].added is not None:
            added = {k: torch.cat([p.added[k] for p in parts]) for k in parts[0].added}
        return Cond(join([p.hidden for p in parts]), join([p.mask for p in parts]),
                    join([p.class_labels for p in parts]), added)  # fmt: skip

    def repeat(self, n: int) -> Cond:
        return Cond.cat([self] * n)


class WNet(nn.Module):
    """``unet`` (diffusers), ``sketch_encoder`` and ``connections`` (ours), ``text`` (the conditioning:
    a learned tag embedding, or the checkpoint's tokenizer and text encoder(s))."""

    def __init__(
        self, cfg: ModelConfig, unet_config: dict[str, Any], text: nn.Module, sketch_stride: int = 1
    ):
        super().__init__()
        self.cfg = cfg
        self.unet_config = dict(unet_config)
        self.unet = make_unet(unet_config)
        self.in_channels = int(self.unet.config.in_channels)
        doors = door_shapes(unet_config)
        self.sketch_encoder = SketchEncoder(cfg, doors.levels, sketch_stride)
        self.connections = Connections(doors, cfg.sketch_channels, cfg.doors)
        self.text = text
        # Every level halves the size; inputs must divide by this (times the space's own stride).
        self.size_multiple = 2 ** (doors.levels - 1)

    def set_grad_checkpointing(self, on: bool) -> None:
        if on:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()
        self.sketch_encoder.grad_checkpointing = on

    def encode(self, prompt: Any) -> Cond:
        return self.text(prompt)

    def denoise(
        self, x: torch.Tensor, t: torch.Tensor, cond: Cond, feats: list[torch.Tensor] | None,
        sketch_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """The UNet's prediction with the sketch features ``feats`` entering through the doors (None: no sketch)."""
        extra: dict[str, Any] = {}
        if feats is not None:
            scale = sketch_scale if sketch_scale is not None else torch.ones(x.shape[0], device=x.device)
            extra = self.connections(feats, scale)
        return self.unet(
            x, t, encoder_hidden_states=cond.hidden, encoder_attention_mask=cond.mask,
            class_labels=cond.class_labels, added_cond_kwargs=cond.added, return_dict=False, **extra,
        )[0]  # fmt: skip

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, prompt: Any, sketch: torch.Tensor,
        sketch_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``x``: noisy input; ``prompt``: what ``text`` encodes; ``sketch``: N x 1 x H x W inverted lines;
        ``sketch_scale``: N, 0 = no sketch. Everything trained runs inside this call (DDP, FSDP)."""
        if x.shape[-1] % self.size_multiple or x.shape[-2] % self.size_multiple:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must divide by {self.size_multiple}")
        return self.denoise(x, t, self.encode(prompt), self.sketch_encoder(sketch), sketch_scale)


__all__ = ["Cond", "Connections", "SketchEncoder", "WNet", "zero_conv"]
