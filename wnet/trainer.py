"""One training step and everything it owns: model, EMA, AdamW, schedule, space, vocabulary.

Pure of I/O: batches come in as arrays (``sharding.loader.Batch``-shaped: ``images`` N x H x W x 3
uint8, ``lines`` N x H x W uint8 with 255 paper, ``meta`` with ``tags`` by category, ``keys``).
The randomness of step ``s`` (flips, dropouts, timesteps, noise) comes from a generator seeded by
(seed, s, rank), so a resumed run draws exactly what a straight run draws.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .config import WnetConfig
from .diffusion import Schedule
from .model import WNet
from .painter import Painter, autocast_for, build_model, lines_to_tensor
from .space import LatentSpace, PixelSpace, create_space, images_to_tensor
from .vocab import NULL, PAD, TagVocab


class BatchLike(Protocol):
    keys: list[str]
    images: np.ndarray
    lines: np.ndarray
    meta: list[dict[str, Any]]


class LossIsNaN(RuntimeError):
    def __init__(self, step: int, keys: list[str]):
        super().__init__(f"loss is not finite at step {step}; batch keys: {', '.join(keys)}")
        self.step, self.keys = step, keys


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class Inputs:
    x0: torch.Tensor  # in the model's space
    sketch: torch.Tensor  # N x 1 x H x W, ink 1 on 0
    tags: torch.Tensor  # N x max_tags ids
    sketch_scale: torch.Tensor  # N; 0 where the sketch is dropped


class Setup(Protocol):
    """What turning a batch into a loss needs; a Trainer and a Painter both have it."""

    cfg: WnetConfig
    vocab: TagVocab
    space: PixelSpace | LatentSpace
    device: torch.device

    @property
    def schedule(self) -> Schedule: ...


def make_inputs(setup: Setup, batch: BatchLike, gen: torch.Generator | None, train: bool = True) -> Inputs:
    """Arrays -> tensors; with ``train`` the flips and the three dropouts are drawn from ``gen``."""
    cfg = setup.cfg
    t = cfg.train
    images, lines = batch.images, batch.lines
    n = len(images)
    ids = torch.from_numpy(
        setup.vocab.encode_batch([m.get("tags") or {} for m in batch.meta], cfg.model.max_tags)
    )
    scale = torch.ones(n)
    if train:
        flip = (torch.rand(n, generator=gen) < t.flip).numpy()
        if flip.any():  # the illustration and its sketch flip together
            images, lines = images.copy(), lines.copy()
            images[flip] = images[flip][:, :, ::-1]
            lines[flip] = lines[flip][:, :, ::-1]
        drop_tag = (torch.rand(ids.shape, generator=gen) < t.tag_dropout) & (ids != NULL)
        ids = ids.masked_fill(drop_tag, PAD)
        drop_set = torch.rand(n, generator=gen) < t.tagset_dropout
        ids[drop_set, 1:] = PAD
        scale = (torch.rand(n, generator=gen) >= t.sketch_dropout).float()
    x0 = setup.space.encode(images_to_tensor(images, setup.device))
    return Inputs(x0, lines_to_tensor(lines, setup.device), ids.to(setup.device), scale.to(setup.device))


def diffusion_loss(
    setup: Setup, model: torch.nn.Module, inp: Inputs, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    schedule = setup.schedule
    x_t = schedule.add_noise(inp.x0, noise, t)
    with autocast_for(setup.device):
        pred = model(x_t, t, inp.tags, inp.sketch, inp.sketch_scale)
    per_sample = F.mse_loss(pred.float(), schedule.target(inp.x0, noise, t), reduction="none").mean((1, 2, 3))
    # Sample weights are realised by the loader's sampling; the loss is never multiplied by them.
    return (per_sample * schedule.loss_weight(t)).mean()


@torch.no_grad()
def fixed_loss(model: torch.nn.Module, setup: Setup, batch: BatchLike, seed: int = 0) -> float:
    """Loss with fixed timesteps (spread over the schedule), fixed noise and no dropout: comparable
    across steps and runs."""
    was = model.training
    model.eval()
    inp = make_inputs(setup, batch, None, train=False)
    n = inp.x0.shape[0]
    gen = torch.Generator().manual_seed(seed)
    t = ((torch.arange(n) + 0.5) * setup.schedule.T / n).long().to(setup.device)
    noise = torch.randn(inp.x0.shape, generator=gen).to(setup.device)
    loss = float(diffusion_loss(setup, model, inp, t, noise))
    model.train(was)
    return loss


class Trainer:
    def __init__(self, cfg: WnetConfig, vocab: TagVocab, device: str | torch.device = "cpu", rank: int = 0):
        self.cfg, self.vocab, self.rank = cfg, vocab, rank
        self.device = torch.device(device)
        self.space: PixelSpace | LatentSpace = create_space(cfg.space.vae, self.device)
        self._schedule = Schedule.create(cfg.diffusion)
        torch.manual_seed(cfg.train.seed)  # the initial weights
        self.model: WNet = build_model(cfg, len(vocab), self.space).to(self.device)
        self.model.set_grad_checkpointing(cfg.train.grad_checkpointing)
        self.ema: WNet = copy.deepcopy(self.model).requires_grad_(False).eval()
        # The module the loss runs through: a DistributedDataParallel wrapper on several workers.
        self.ddp: torch.nn.Module = self.model
        t = cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.step = 0

    # ------------------------------------------------------------ steps

    @property
    def schedule(self) -> Schedule:
        return self._schedule

    def lr_at(self, step: int) -> float:
        t = self.cfg.train
        return t.lr * min(1.0, (step + 1) / max(1, t.warmup))

    def train_step(self, batch: BatchLike) -> dict[str, float]:
        """One optimiser step on ``batch``; raises LossIsNaN (weights untouched) on a non-finite loss."""
        cfg = self.cfg.train
        gen = step_generator(cfg.seed, self.step, self.rank)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # model dropout, if any
        self.model.train()
        inp = make_inputs(self, batch, gen)
        n = inp.x0.shape[0]
        t = torch.randint(0, self.schedule.T, (n,), generator=gen).to(self.device)
        noise = torch.randn(inp.x0.shape, generator=gen).to(self.device)
        loss = diffusion_loss(self, self.ddp, inp, t, noise)
        if not torch.isfinite(loss):
            raise LossIsNaN(self.step, list(batch.keys))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        )
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        self._update_ema()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.train.ema_decay, (1 + self.step) / (10 + self.step))
        ema = list(self.ema.parameters())
        torch._foreach_lerp_(ema, list(self.model.parameters()), 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.model.buffers(), strict=True):
            b_ema.copy_(b)

    def fixed_loss(self, batch: BatchLike, seed: int = 0, ema: bool = False) -> float:
        return fixed_loss(self.ema if ema else self.model, self, batch, seed)

    def painter(self) -> Painter:
        return Painter(self.cfg, self.ema, self.vocab, self.space, self.device, self.step)

    # ------------------------------------------------------------ state

    def state_dicts(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load(self, model: dict, ema: dict, optimizer: dict, step: int) -> None:
        self.model.load_state_dict(model)
        self.ema.load_state_dict(ema)
        self.optimizer.load_state_dict(optimizer)
        self.step = step


__all__ = ["LossIsNaN", "Trainer", "diffusion_loss", "fixed_loss", "make_inputs", "step_generator"]
