"""What the UNet reads besides the sketch: learned tags (``tiny``) or the checkpoint's text encoder(s).

Both are ``nn.Module``s inside the W-net (``WNet.text``) taking a ``Prompt`` and giving a ``Cond``:

- ``TagEmbedding``: the tag vocabulary (``wnet.vocab``) embedded and normalised as the cross-attention
  context (PAD masked out), and its masked mean as the class-embedding input of the ``custom`` UNet
  (the pooled vector's job in SDXL: a direct, global path for colour and style tags).
- ``TextEncoders``: the checkpoint's CLIP tokenizer(s) and text encoder(s) (frozen unless
  ``text.train_encoder``), fed the caption of ``sharding.captions`` (tags in category order). SD 1.x
  and 2.x: the last hidden state (or the ``clip_skip``-th from the end, final norm applied). SDXL:
  both encoders' penultimate hidden states side by side, the second's pooled projection, and the
  size/crop ids of each sample (``time_ids``: original size, crop top-left, target size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sharding.captions import CaptionRule, caption

from .config import TextConfig
from .model import Cond
from .vocab import NULL, PAD, TagVocab


@dataclass
class Prompt:
    """A batch's conditioning before encoding: tag ids (tags) or captions (text), SDXL's size ids."""

    ids: torch.Tensor | None = None  # N x max_tags
    captions: list[str] | None = None
    time_ids: torch.Tensor | None = None  # N x 6: original (h, w), crop (top, left), target (h, w)

    def __len__(self) -> int:
        return len(self.ids) if self.ids is not None else len(self.captions or ())

    @staticmethod
    def cat(parts: list[Prompt]) -> Prompt:
        ids = None if parts[0].ids is None else torch.cat([p.ids for p in parts])
        caps = None if parts[0].captions is None else [c for p in parts for c in p.captions]
        times = None if parts[0].time_ids is None else torch.cat([p.time_ids for p in parts])
        return Prompt(ids, caps, times)


class TagEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, pooled: bool):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.norm = nn.LayerNorm(dim)
        self.pooled = pooled

    def forward(self, prompt: Prompt) -> Cond:
        ids = prompt.ids
        hidden = self.norm(self.embed(ids))
        mask = ids != PAD  # PAD is never attended; NULL at position 0 always is
        weights = mask.to(hidden.dtype)[..., None]
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1) if self.pooled else None
        return Cond(hidden, mask.to(hidden.dtype), pooled)


class TextEncoders(nn.Module):
    """One (SD 1.x/2.x) or two (SDXL) CLIP tokenizer + text encoder pairs."""

    def __init__(self, tokenizers: list[Any], encoders: list[nn.Module], cfg: TextConfig, sdxl: bool):
        super().__init__()
        self.tokenizers = tokenizers
        self.encoders = nn.ModuleList(encoders)
        self.clip_skip, self.sdxl, self.trainable = cfg.clip_skip, sdxl, cfg.train_encoder
        self.requires_grad_(self.trainable)
        if not self.trainable:
            self.encoders.eval()

    def train(self, mode: bool = True) -> TextEncoders:
        super().train(mode and self.trainable)  # a frozen encoder stays in eval mode (no dropout)
        return self

    def _ids(self, tokenizer, captions: list[str], device) -> torch.Tensor:
        out = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt")  # fmt: skip
        return out.input_ids.to(device)

    def forward(self, prompt: Prompt) -> Cond:
        device = next(self.encoders.parameters()).device
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            if not self.sdxl:
                out = self.encoders[0](
                    self._ids(self.tokenizers[0], prompt.captions, device), output_hidden_states=True
                )
                if self.clip_skip == 1:
                    hidden = out.last_hidden_state
                else:  # A1111's CLIP skip: an earlier layer, through the final norm
                    model = getattr(self.encoders[0], "text_model", self.encoders[0])
                    hidden = model.final_layer_norm(out.hidden_states[-self.clip_skip])
                return Cond(hidden)
            hiddens, pooled = [], None
            for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
                out = encoder(self._ids(tokenizer, prompt.captions, device), output_hidden_states=True)
                hiddens.append(out.hidden_states[-2])  # SDXL reads the penultimate layer of both
                pooled = getattr(out, "text_embeds", None)
            time_ids = prompt.time_ids.to(device=device, dtype=hiddens[0].dtype)
            return Cond(torch.cat(hiddens, -1), added={"text_embeds": pooled, "time_ids": time_ids})


def tag_ids(vocab: TagVocab, tags: Sequence[Mapping[str, Sequence[str]]], max_tags: int) -> torch.Tensor:
    return torch.from_numpy(vocab.encode_batch(list(tags), max_tags))


def null_ids(n: int, max_tags: int, device: str | torch.device = "cpu") -> torch.Tensor:
    ids = torch.full((n, max_tags), PAD, dtype=torch.long, device=device)
    ids[:, 0] = NULL
    return ids


def caption_rule(cfg: TextConfig) -> CaptionRule:
    return CaptionRule(tuple(cfg.caption_order), cfg.underscores)


def captions(tags: Sequence[Mapping[str, Any]], cfg: TextConfig) -> list[str]:
    """Each sample's caption by the one caption rule (``sharding.captions``)."""
    rule = caption_rule(cfg)
    return [caption(t or {}, rule).text for t in tags]


def drop_tags(
    tags: Sequence[Mapping[str, Any]], p_tag: float, p_set: np.ndarray | Sequence[bool], gen: torch.Generator
) -> list[dict[str, list[str]]]:
    """Tag dropout for captions: each tag dropped with ``p_tag`` (one draw per tag, in caption order),
    every tag of the samples where ``p_set`` is True."""
    out = []
    for sample, drop_all in zip(tags, p_set, strict=True):
        kept = {}
        for cat, value in (sample or {}).items():
            items = value.split() if isinstance(value, str) else list(value or ())
            keep = (torch.rand(len(items), generator=gen) >= p_tag).tolist() if items else []
            kept[cat] = [] if drop_all else [t for t, k in zip(items, keep, strict=True) if k]
        out.append(kept)
    return out


def sdxl_time_ids(meta: Mapping[str, Any], size: tuple[int, int], flipped: bool) -> list[float]:
    """SDXL's micro-conditioning of one sample from its real facts: original (h, w), the crop's
    top-left in the resized picture, target (h, w). ``size`` is the training (w, h); a horizontal flip
    moves the crop's left edge to the mirrored side (as diffusers' SDXL script does)."""
    w, h = size
    ow, oh = (meta.get("original_size") or [w, h])[:2]
    left, top, right, bottom = (meta.get("crop_box") or [0, 0, ow, oh])[:4]
    scale = h / max(1, bottom - top)
    crop_left = (ow - right) if flipped else left
    return [float(oh), float(ow), round(top * scale), round(crop_left * scale), float(h), float(w)]


__all__ = ["Prompt", "TagEmbedding", "TextEncoders", "caption_rule", "captions", "drop_tags", "null_ids",
           "sdxl_time_ids", "tag_ids"]  # fmt: skip
