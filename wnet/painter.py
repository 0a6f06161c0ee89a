"""From a checkpoint to pictures: the model, the vocabulary, the schedule and the space in one object."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import open_checkpoint
from .config import SampleConfig, WnetConfig, check_same, config_from_dict
from .diffusion import Schedule, sample
from .model import WNet
from .space import LatentSpace, PixelSpace, create_space, tensor_to_images
from .vocab import NULL, PAD, TagVocab


def lines_to_tensor(lines: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """N x H x W uint8 (255 paper, 0 ink) -> N x 1 x H x W float, ink 1.0 on 0.0 (see checkpoint.LINES)."""
    x = torch.from_numpy(np.ascontiguousarray(lines)).to(device).float()
    return (1.0 - x / 255.0)[:, None]


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def build_model(cfg: WnetConfig, vocab_size: int, space: PixelSpace | LatentSpace) -> WNet:
    return WNet(cfg.model, space.channels, vocab_size, sketch_stride=space.stride)


def null_tags(n: int, max_tags: int, device: str | torch.device = "cpu") -> torch.Tensor:
    ids = torch.full((n, max_tags), PAD, dtype=torch.long, device=device)
    ids[:, 0] = NULL
    return ids


@dataclass
class Painter:
    cfg: WnetConfig
    model: WNet
    vocab: TagVocab
    space: PixelSpace | LatentSpace
    device: torch.device
    step: int = 0

    @classmethod
    def from_checkpoint(
        cls, path: str, device: str = "cpu", expect: WnetConfig | None = None, which: str = "ema"
    ) -> Painter:
        ckpt = open_checkpoint(path)
        if expect is not None:
            check_same(ckpt.state["config"], expect)
        cfg = config_from_dict(ckpt.state["config"])
        vocab = TagVocab.from_json(ckpt.state["vocab"])
        space = create_space(cfg.space.vae, device)
        model = build_model(cfg, len(vocab), space)
        model.load_state_dict(ckpt.weights(which))
        return cls(cfg, model.to(device).eval(), vocab, space, torch.device(device), ckpt.step)

    @property
    def schedule(self) -> Schedule:
        return Schedule.create(self.cfg.diffusion)

    def denoiser(self, sketch: torch.Tensor):
        feats_cache: dict[int, list[torch.Tensor]] = {}

        def run(x, t, tags, scale):
            # Guidance stacks copies of the batch; the sketch features are computed once per copy count.
            reps = x.shape[0] // sketch.shape[0]
            if reps not in feats_cache:
                feats = self.model.sketch_encoder(sketch)
                feats_cache[reps] = [f.repeat(reps, 1, 1, 1) for f in feats]
            with autocast_for(self.device):
                return self.model.unet(x, t, tags, feats_cache[reps], scale).float()

        return run

    @torch.no_grad()
    def paint(
        self, lines: np.ndarray, tags: Sequence[Mapping[str, Sequence[str]]], seed: int = 0,
        sample_cfg: SampleConfig | None = None,
    ) -> np.ndarray:  # fmt: skip
        """N x H x W uint8 line drawings (255 paper) + tags per sample -> N x H x W x 3 uint8 images."""
        sc = sample_cfg or self.cfg.sample
        n, h, w = lines.shape
        stride = self.space.stride
        mult = self.model.size_multiple * stride
        if h % mult or w % mult:
            raise ValueError(f"sketch size {w}x{h} must divide by {mult} for this model")
        sketch = lines_to_tensor(lines, self.device)
        ids = torch.from_numpy(self.vocab.encode_batch(list(tags), self.cfg.model.max_tags)).to(self.device)
        gen = torch.Generator().manual_seed(seed)
        shape = (n, self.space.channels, h // stride, w // stride)
        x0 = sample(
            self.denoiser(sketch),
            self.schedule,
            shape,
            ids,
            null_tags(n, ids.shape[1], self.device),
            sc,
            gen,
            self.device,
        )
        return tensor_to_images(self.space.decode(x0))


__all__ = ["Painter", "autocast_for", "build_model", "lines_to_tensor", "null_tags"]
