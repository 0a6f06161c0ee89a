"""W-net: a diffusion UNet plus a separate sketch encoder whose feature maps enter the UNet.

The UNet is Stable-Diffusion-like: ResBlocks with a timestep embedding, and at the levels in
``attn_levels`` a transformer block (self-attention, cross-attention to the tag tokens, MLP).
The sketch encoder is our own conv stack; it yields one feature map per UNet level. Each map enters
(a) the UNet's encoder, added to the hidden state after every block of its level, and (b) every skip
connection of its level, added where the decoder concatenates it. Every entry goes through its own
1x1 convolution initialised to zero, so at step 0 the W-net computes exactly the plain UNet
(ControlNet's trick), and a per-sample ``sketch_scale`` multiplies all of them (0 = no sketch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def zero_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int | None, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb is not None:
            h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, dim: int, context: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(context, dim, bias=False)
        self.v = nn.Linear(context, dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, dim = x.shape
        split = lambda z: z.view(n, -1, self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(ctx)), split(self.v(ctx))
        attn_mask = mask[:, None, None, :] if mask is not None else None  # True = attend
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(h.transpose(1, 2).reshape(n, length, dim))


class TransformerBlock(nn.Module):
    """Self-attention over pixels, cross-attention to the tag tokens, MLP: SD's BasicTransformerBlock."""

    def __init__(self, dim: int, context: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.ln1, self.self_attn = nn.LayerNorm(dim), Attention(dim, dim, heads)
        self.ln2, self.cross_attn = nn.LayerNorm(dim), Attention(dim, context, heads)
        self.ln3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        z = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        y = self.ln1(z)
        z = z + self.self_attn(y, y)
        z = z + self.cross_attn(self.ln2(z), ctx, mask)
        z = z + self.ff(self.ln3(z))
        return x + self.proj_out(z.transpose(1, 2).reshape(n, c, h, w))


class SketchEncoder(nn.Module):
    """Inverted line drawing (N x 1 x H x W, lines 1 on 0) -> one feature map per UNet level.

    ``stride`` is the space's downsampling (1 in pixel space, the VAE factor in latent space), so
    that level 0's map has the UNet input's size."""

    def __init__(self, cfg: ModelConfig, stride: int = 1):
        super().__init__()
        widths = cfg.sketch_channels
        # Pixel space: a 3x3 conv; latent space: a patchifying conv down to the latent grid.
        stem = (
            nn.Conv2d(1, widths[0], 3, padding=1)
            if stride == 1
            else nn.Conv2d(1, widths[0], stride, stride=stride)
        )
        self.stem = nn.Sequential(stem, nn.SiLU())
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = [ResBlock(cin if j == 0 else w, w, None, cfg.groups) for j in range(cfg.sketch_blocks)]
            self.levels.append(nn.Sequential(*blocks))
            self.downs.append(
                nn.Conv2d(w, w, 3, stride=2, padding=1) if i + 1 < len(widths) else nn.Identity()
            )
            cin = w

    def forward(self, sketch: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(sketch)
        feats = []
        for level, down in zip(self.levels, self.downs, strict=True):
            h = level(h)
            feats.append(h)
            h = down(h)
        return feats


class UNet(nn.Module):
    """The plain diffusion UNet; ``sketch`` features and their injections are optional."""

    def __init__(self, cfg: ModelConfig, in_channels: int, out_channels: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        temb = ch[0] * 4
        self.grad_checkpointing = False
        self.time = nn.Sequential(nn.Linear(ch[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.tags = nn.Embedding(vocab_size, cfg.tag_dim)
        self.tag_norm = nn.LayerNorm(cfg.tag_dim)
        # The mean tag embedding also joins the timestep embedding (SDXL's pooled text vector): a direct,
        # global path for style and colour tags besides cross-attention.
        self.tag_pool = nn.Linear(cfg.tag_dim, temb)
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)

        def block(cin: int, cout: int, level: int) -> nn.ModuleDict:
            d = nn.ModuleDict({"res": ResBlock(cin, cout, temb, cfg.groups, cfg.dropout)})
            if level in cfg.attn_levels:
                d["attn"] = TransformerBlock(cout, cfg.tag_dim, cfg.heads, cfg.groups)
            return d

        # Encoder. The j-th skip tensor (conv_in, each block, each downsample) has skip_ch[j] channels
        # at the resolution of level skip_levels[j] (a downsample's output is at the next level's).
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_ch, self.skip_levels = [ch[0]], [0]
        cin = ch[0]
        for i, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks):
                blocks.append(block(cin, c, i))
                cin = c
                skip_ch.append(c)
                self.skip_levels.append(i)
            self.down_blocks.append(blocks)
            if i + 1 < len(ch):
                self.downsamples.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_ch.append(c)
                self.skip_levels.append(i + 1)
        injected = list(zip(skip_ch, self.skip_levels, strict=True))
        mid = len(ch) - 1
        self.mid = nn.ModuleList([block(cin, cin, mid), ResBlock(cin, cin, temb, cfg.groups, cfg.dropout)])
        if "attn" not in self.mid[0]:  # the middle always attends, as in SD
            self.mid[0]["attn"] = TransformerBlock(cin, cfg.tag_dim, cfg.heads, cfg.groups)

        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.res_blocks + 1):
                blocks.append(block(cin + skip_ch.pop(), ch[i], i))
                cin = ch[i]
            self.up_blocks.append(blocks)
            self.upsamples.append(nn.Conv2d(cin, cin, 3, padding=1) if i > 0 else nn.Identity())
        self.norm_out = nn.GroupNorm(cfg.groups, cin)
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

        # Zero-initialised entries for the sketch features: one per encoder block (after conv_in, each
        # block and each downsample: the same places the skips are taken) and one per skip.
        sk = cfg.sketch_channels
        self.inject_encoder = nn.ModuleList([zero_conv(sk[lv], c) for c, lv in injected])
        self.inject_skip = nn.ModuleList([zero_conv(sk[lv], c) for c, lv in injected])

    def _run(self, fn, *args):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _block(self, d: nn.ModuleDict, h, emb, ctx, mask):
        h = self._run(d["res"], h, emb)
        if "attn" in d:
            h = self._run(d["attn"], h, ctx, mask)
        return h

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, tag_ids: torch.Tensor,
        sketch: list[torch.Tensor] | None = None, sketch_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        emb = self.time(timestep_embedding(t, self.cfg.channels[0]))
        ctx = self.tag_norm(self.tags(tag_ids))
        mask = tag_ids != 0  # PAD is never attended; NULL at position 0 always is
        weights = mask.to(ctx.dtype)[..., None]
        emb = emb + self.tag_pool((ctx * weights).sum(1) / weights.sum(1).clamp(min=1))
        scale = (
            None
            if sketch is None
            else (sketch_scale if sketch_scale is not None else torch.ones(x.shape[0], device=x.device))
        )
        scale = None if scale is None else scale.to(x.dtype).view(-1, 1, 1, 1)

        def enter(h: torch.Tensor, j: int) -> torch.Tensor:
            if sketch is None:
                return h
            return h + scale * self.inject_encoder[j](sketch[self.skip_levels[j]]).to(h.dtype)

        h = enter(self.conv_in(x), 0)
        skips = [h]
        j = 1
        for i, blocks in enumerate(self.down_blocks):
            for d in blocks:
                h = enter(self._block(d, h, emb, ctx, mask), j)
                skips.append(h)
                j += 1
            if i < len(self.downsamples):
                h = enter(self.downsamples[i](h), j)
                skips.append(h)
                j += 1
        h = self._block(self.mid[0], h, emb, ctx, mask)
        h = self._run(self.mid[1], h, emb)
        for blocks, up in zip(self.up_blocks, self.upsamples, strict=True):
            for d in blocks:
                j -= 1
                skip = skips.pop()
                if sketch is not None:
                    skip = skip + scale * self.inject_skip[j](sketch[self.skip_levels[j]]).to(skip.dtype)
                h = self._block(d, torch.cat([h, skip], 1), emb, ctx, mask)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class WNet(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: int, vocab_size: int, sketch_stride: int = 1):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.unet = UNet(cfg, in_channels, in_channels, vocab_size)
        self.sketch_encoder = SketchEncoder(cfg, sketch_stride)
        # Every level halves the size; inputs must divide by this (times the space's own stride).
        self.size_multiple = 2 ** (len(cfg.channels) - 1)

    def set_grad_checkpointing(self, on: bool) -> None:
        self.unet.grad_checkpointing = on

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, tag_ids: torch.Tensor, sketch: torch.Tensor,
        sketch_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``x``: noisy input; ``sketch``: N x 1 x H x W inverted lines; ``sketch_scale``: N, 0 = no sketch."""
        if x.shape[-1] % self.size_multiple or x.shape[-2] % self.size_multiple:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must divide by {self.size_multiple}")
        feats = self.sketch_encoder(sketch)
        return self.unet(x, t, tag_ids, feats, sketch_scale)


__all__ = ["SketchEncoder", "UNet", "WNet", "timestep_embedding"]
