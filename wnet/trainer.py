"""One training step and everything it owns: model, EMA, AdamW, schedule, space, conditioning.

Pure of I/O: batches come in as arrays (``sharding.loader.Batch``-shaped: ``images`` N x H x W x 3
uint8, ``lines`` N x H x W uint8 with 255 paper, ``meta`` with ``tags`` by category, ``keys``, and
``latents`` when the latent cache supplies them). The randomness of step ``s`` (flips, dropouts,
timesteps, noise) comes from a generator seeded by (seed, s, rank), so a resumed run draws exactly
what a straight run draws.

State goes through ``torch.distributed.checkpoint.state_dict`` (full, unsharded tensors keyed by
name), so one checkpoint format serves one process, DDP and FSDP: a sharded model is gathered to
save and scattered to load. The EMA is kept per trainable tensor in the model's own layout (a
shard under FSDP); ``ema_weights()`` swaps it into the model for painting and held-out losses.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .config import WnetConfig, WnetConfigError
from .diffusion import Schedule
from .model import WNet
from .painter import Painter, autocast_for, lines_to_tensor
from .parts import Parts, build_wnet, plain_parts, saved_names
from .space import LatentSpace, PixelSpace, create_space, images_to_tensor, vae_channels
from .text import Prompt, captions, drop_tags, sdxl_time_ids, tag_ids
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
    prompt: Prompt
    sketch_scale: torch.Tensor  # N; 0 where the sketch is dropped


class Setup(Protocol):
    """What turning a batch into a loss needs; a Trainer and a Painter both have it."""

    cfg: WnetConfig
    vocab: TagVocab
    parts: Parts
    space: PixelSpace | LatentSpace
    device: torch.device

    @property
    def schedule(self) -> Schedule: ...


def make_prompt(
    setup: Setup, tags: list[dict[str, Any]], gen: torch.Generator | None, train: bool,
    sizes: list[tuple[tuple[int, int], bool, dict]] | None = None,
) -> Prompt:  # fmt: skip
    """Tags -> the conditioning input; with ``train`` the tag and tag-set dropouts are drawn from ``gen``.
    ``sizes``: per sample (training size, flipped, meta) for SDXL's size ids."""
    cfg, n = setup.cfg, len(tags)
    t = cfg.train
    if setup.parts.text == "tags":
        ids = tag_ids(setup.vocab, tags, cfg.model.max_tags)
        if train:
            drop_tag = (torch.rand(ids.shape, generator=gen) < t.tag_dropout) & (ids != NULL)
            ids = ids.masked_fill(drop_tag, PAD)
            drop_set = torch.rand(n, generator=gen) < t.tagset_dropout
            ids[drop_set, 1:] = PAD
        return Prompt(ids=ids.to(setup.device))
    if train:
        drop_set = (torch.rand(n, generator=gen) < t.tagset_dropout).tolist()
        tags = drop_tags(tags, t.tag_dropout, drop_set, gen)
    prompt = Prompt(captions=captions(tags, cfg.text))
    if setup.parts.text == "sdxl":
        prompt.time_ids = torch.tensor(
            [sdxl_time_ids(m, size, f) for size, f, m in sizes or []], dtype=torch.float32
        )
    return prompt


def make_inputs(setup: Setup, batch: BatchLike, gen: torch.Generator | None, train: bool = True) -> Inputs:
    """Arrays -> tensors; with ``train`` the flips and the three dropouts are drawn from ``gen``."""
    t = setup.cfg.train
    images, lines = batch.images, batch.lines
    n = len(batch.keys)
    flip = np.zeros(n, bool)
    scale = torch.ones(n)
    if train:
        flip = (torch.rand(n, generator=gen) < t.flip).numpy()
        if flip.any():  # the illustration and its sketch flip together
            lines = lines.copy()
            lines[flip] = lines[flip][:, :, ::-1]
            if images is not None:
                images = images.copy()
                images[flip] = images[flip][:, :, ::-1]
    size = (lines.shape[2], lines.shape[1])
    tags = [m.get("tags") or {} for m in batch.meta]
    prompt = make_prompt(
        setup, tags, gen, train, [(size, bool(f), m) for f, m in zip(flip, batch.meta, strict=True)]
    )
    if train:
        scale = (torch.rand(n, generator=gen) >= t.sketch_dropout).float()
    latents = getattr(batch, "latents", None)
    if latents is not None:  # the latent cache: each sample's latent, of the flipped picture where flipped
        x0 = torch.from_numpy(latents[np.arange(n), flip.astype(np.int64)]).to(setup.device)
    else:
        x0 = setup.space.encode(images_to_tensor(images, setup.device))
    return Inputs(x0, lines_to_tensor(lines, setup.device), prompt, scale.to(setup.device))


def diffusion_loss(
    setup: Setup, model: torch.nn.Module, inp: Inputs, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    schedule = setup.schedule
    x_t = schedule.add_noise(inp.x0, noise, t)
    with autocast_for(setup.device, setup.cfg.train.precision):
        pred = model(x_t, t, inp.prompt, inp.sketch, inp.sketch_scale)
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


def _full_options(**extra):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **extra)


class Trainer:
    """``parts``: the run's resolved parts (None: those of a config without an init base);
    ``run``: the run folder (for components/); ``init``: the initial weights (RUN/init.safetensors);
    ``wrap``: turns the model into its distributed form (DDP wrapper, or FSDP in place) before the
    optimizer and the EMA are made."""

    def __init__(
        self, cfg: WnetConfig, vocab: TagVocab, device: str | torch.device = "cpu", rank: int = 0,
        parts: Parts | None = None, run: str | None = None, init: dict[str, torch.Tensor] | None = None,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ):  # fmt: skip
        self.cfg, self.vocab, self.rank, self.run = cfg, vocab, rank, run
        self.device = torch.device(device)
        self.parts = parts or plain_parts(cfg, vae_channels(cfg.space.vae))
        self.space: PixelSpace | LatentSpace = create_space(self.parts.vae_path(run), self.device)
        self._schedule = Schedule.create(cfg.diffusion)
        torch.manual_seed(cfg.train.seed)  # the fresh weights (those no init file replaces)
        self.model: WNet = build_wnet(cfg, self.parts, len(vocab), run, self.space.stride)
        self.saved = saved_names(self.model)
        if init is not None:
            self._load_model(init)
        self.model.to(self.device)
        self.model.set_grad_checkpointing(cfg.train.grad_checkpointing)
        # The module the loss runs through: DDP's wrapper, or the model itself (sharded in place by FSDP).
        self.ddp: torch.nn.Module = wrap(self.model) if wrap is not None else self.model
        self.params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for _, p in self.params]
        t = cfg.train
        self.optimizer = torch.optim.AdamW([p for _, p in self.params], lr=t.lr, weight_decay=t.weight_decay)
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
            [p for _, p in self.params], cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        )
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
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
        for e, (_, p) in zip(self.ema, self.params, strict=True):
            e.lerp_(p.detach(), 1.0 - decay)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[WNet]:
        """The model with the EMA weights in place (every rank together under FSDP); restored after."""
        with torch.no_grad():
            kept = [p.detach().clone() for _, p in self.params]
            for e, (_, p) in zip(self.ema, self.params, strict=True):
                p.copy_(e)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for k, (_, p) in zip(kept, self.params, strict=True):
                    p.copy_(k)

    def fixed_loss(self, batch: BatchLike, seed: int = 0, ema: bool = False) -> float:
        if not ema:
            return fixed_loss(self.model, self, batch, seed)
        with self.ema_weights() as model:
            return fixed_loss(model, self, batch, seed)

    def painter(self) -> Painter:
        """A Painter on the EMA weights (a copy: painting does not touch training)."""
        import copy

        with self.ema_weights() as model:
            frozen = copy.deepcopy(model).eval()
        return Painter(self.cfg, frozen, self.vocab, self.space, self.device, self.step, self.parts)

    def paint(self, lines: np.ndarray, tags: list, seed: int = 0) -> np.ndarray:
        """Paint with the EMA weights in place (no copy; every rank together under FSDP)."""
        with self.ema_weights() as model:
            was = model.training
            model.eval()
            try:
                painter = Painter(self.cfg, model, self.vocab, self.space, self.device, self.step, self.parts)
                return painter.paint(lines, tags, seed=seed)
            finally:
                model.train(was)

    # ------------------------------------------------------------ state

    def _load_model(self, weights: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        missing = sorted(set(self.saved) - set(weights))
        extra = sorted(set(weights) - set(self.saved))
        if missing or extra:
            what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which this W-net has no place for"
            raise WnetConfigError(
                f"weights do not fit the model: {what} ({len(missing)} missing, {len(extra)} extra)"
            )
        set_model_state_dict(self.model, weights, options=_full_options(strict=False))

    def state_dicts(self) -> dict[str, Any]:
        """Full (gathered) model, EMA and optimizer state; every rank must call it under FSDP."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        opts = _full_options()
        model = {k: v for k, v in get_model_state_dict(self.model, options=opts).items() if k in self.saved}
        with self.ema_weights():
            # cloned: without a process group the "full" state shares the parameters' storage
            ema = {
                k: v.clone()
                for k, v in get_model_state_dict(self.model, options=opts).items()
                if k in self.saved
            }
        optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        return {"model": model, "ema": ema, "optimizer": optimizer}

    def load(self, model: dict, ema: dict, optimizer: dict, step: int) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        self._load_model(ema)
        with torch.no_grad():
            self.ema = [p.detach().clone() for _, p in self.params]
        self._load_model(model)
        set_optimizer_state_dict(self.model, self.optimizer, optimizer, options=_full_options())
        self.step = step


__all__ = ["LossIsNaN", "Trainer", "diffusion_loss", "fixed_loss", "make_inputs", "make_prompt",
           "step_generator"]  # fmt: skip
