"""From a checkpoint to pictures: the model, the conditioning, the schedule and the space in one object."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import open_checkpoint, run_of
from .config import SampleConfig, WnetConfig, check_same, config_from_dict
from .diffusion import Schedule, sample
from .model import Cond, WNet
from .parts import Parts, build_wnet, load_weights
from .space import LatentSpace, PixelSpace, create_space, tensor_to_images
from .text import Prompt, captions, null_ids, sdxl_time_ids, tag_ids
from .vocab import TagVocab


def lines_to_tensor(lines: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """N x H x W uint8 (255 paper, 0 ink) -> N x 1 x H x W float, ink 1.0 on 0.0 (see checkpoint.LINES)."""
    x = torch.from_numpy(np.ascontiguousarray(lines)).to(device).float()
    return (1.0 - x / 255.0)[:, None]


def autocast_for(device: torch.device, precision: str = "auto"):
    """``train.precision``: "auto" is bf16 autocast on CUDA and fp32 elsewhere; "bf16" autocasts on any
    device (CPU included); "fp32" never."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Painter:
    cfg: WnetConfig
    model: WNet
    vocab: TagVocab
    space: PixelSpace | LatentSpace
    device: torch.device
    step: int = 0
    parts: Parts | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str, device: str = "cpu", expect: WnetConfig | None = None, which: str = "ema"
    ) -> Painter:
        ckpt = open_checkpoint(path)
        if expect is not None:
            check_same(ckpt.state["config"], expect)
        cfg = config_from_dict(ckpt.state["config"])
        vocab = TagVocab.from_json(ckpt.state["vocab"])
        parts = Parts.from_json(ckpt.state["parts"])
        run = run_of(ckpt.path)
        space = create_space(parts.vae_path(run), device)
        model = build_wnet(cfg, parts, len(vocab), run, space.stride)
        load_weights(model, ckpt.weights(which), ckpt.path)
        return cls(cfg, model.to(device).eval(), vocab, space, torch.device(device), ckpt.step, parts)

    @property
    def schedule(self) -> Schedule:
        return Schedule.create(self.cfg.diffusion)

    @property
    def size_multiple(self) -> int:
        return self.model.size_multiple * self.space.stride

    def prompt(
        self, tags: Sequence[Mapping[str, Sequence[str]]], size: tuple[int, int], null: bool = False
    ) -> Prompt:
        """The conditioning input of ``tags`` (or the unconditional one) at training size ``size`` = (w, h)."""
        n = len(tags)
        mode = self.parts.text if self.parts else "tags"
        if mode == "tags":
            ids = (
                null_ids(n, self.cfg.model.max_tags)
                if null
                else tag_ids(self.vocab, tags, self.cfg.model.max_tags)
            )
            return Prompt(ids=ids.to(self.device))
        prompt = Prompt(captions=[""] * n if null else captions(tags, self.cfg.text))
        if mode == "sdxl":  # at inference the picture is its own original, uncropped
            meta = {"original_size": list(size), "crop_box": [0, 0, size[0], size[1]]}
            prompt.time_ids = torch.tensor([sdxl_time_ids(meta, size, False)] * n, dtype=torch.float32)
        return prompt

    def denoiser(self, sketch: torch.Tensor):
        feats_cache: dict[int, list[torch.Tensor]] = {}
        with autocast_for(self.device, self.cfg.train.precision):
            feats = self.model.sketch_encoder(sketch)

        def run(x, t, cond: Cond, scale):
            # Guidance stacks copies of the batch; the sketch features are repeated once per copy count.
            reps = x.shape[0] // sketch.shape[0]
            if reps not in feats_cache:
                feats_cache[reps] = [f.repeat(reps, 1, 1, 1) for f in feats]
            with autocast_for(self.device, self.cfg.train.precision):
                return self.model.denoise(x, t, cond, feats_cache[reps], scale).float()

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
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"sketch size {w}x{h} must divide by {self.size_multiple} for this model")
        sketch = lines_to_tensor(lines, self.device)
        with autocast_for(self.device, self.cfg.train.precision):
            cond = self.model.encode(self.prompt(list(tags), (w, h)))
            null = self.model.encode(self.prompt(list(tags), (w, h), null=True))
        gen = torch.Generator().manual_seed(seed)
        shape = (n, self.space.channels, h // stride, w // stride)
        x0 = sample(self.denoiser(sketch), self.cfg.diffusion, shape, cond, null, sc, gen, self.device)
        return tensor_to_images(self.space.decode(x0))


__all__ = ["Painter", "autocast_for", "lines_to_tensor"]
