"""A training run: ``RUN/`` on disk, resumed when it exists, in-process or on Ray Train workers.

``RUN/`` holds ``run.json`` (config, build, vocabulary), ``metrics.jsonl`` (one object per logged
step), ``samples/step-NNNNNNNN.png`` (rows of sketch | generated | target) and ``checkpoints/``.
The same ``train_loop`` runs in this process (the default) or once per Ray Train worker; there each
rank streams its own part of the shards and rank 0 alone writes to ``RUN``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from sharding.layout import Layout, StorageError

from .checkpoint import save_checkpoint, usable_checkpoint
from .config import WnetConfig, WnetConfigError, check_same, config_from_dict, differences
from .data import heldout_batch, open_stream, train_size
from .space import SpaceError, space_stride
from .trainer import LossIsNaN, Trainer
from .vocab import TagVocab

RUN_FORMAT = 1


class RunError(ValueError):
    """A run that cannot start or go on; one line naming the cause."""


@dataclass
class TrainRequest:
    build: str
    run: str
    config: WnetConfig
    steps: int | None = None  # total steps of the run; None: config.train.steps
    device: str | None = None  # None: cuda when available, else cpu
    show_progress: bool = True
    workers: int = 0  # >0: Ray Train TorchTrainer with this many workers
    gpus: bool = False  # Ray Train workers use one GPU each
    address: str | None = None


@dataclass
class TrainResult:
    run: str
    step: int
    checkpoint: str | None
    last_loss: float | None


# ---------------------------------------------------------------- run folder


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def open_build(build: str) -> Layout:
    """The build's layout (a path or URL); one-line RunError when it cannot be opened."""
    try:
        return Layout(build)
    except StorageError as exc:
        raise RunError(str(exc)) from None


def check_build(build: str, cfg: WnetConfig, multiple: int) -> dict[tuple[int, int], int]:
    """Samples per bucket of the build that the config trains on; errors name what is missing."""
    layout = open_build(build)
    if layout.size(layout.manifest) is None:
        raise RunError(f"{build} is not a finished linepairs build (no {layout.rel(layout.manifest)})")
    table = layout.read_parquet(layout.manifest, columns=["bucket_w", "bucket_h"])
    counts: dict[tuple[int, int], int] = {}
    for w, h in zip(table["bucket_w"].to_pylist(), table["bucket_h"].to_pylist(), strict=True):
        counts[(w, h)] = counts.get((w, h), 0) + 1
    if not counts:
        raise RunError(f"{build} has no samples")
    wanted = [tuple(b) for b in cfg.train.buckets] or sorted(counts)
    have = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(counts.items()))
    missing = [b for b in wanted if not counts.get(b)]
    if missing:
        raise RunError(f"config {cfg.name!r} asks for bucket(s) {', '.join(f'{w}x{h}' for w, h in missing)} "
                       f"but {build} has no samples there; it has {have}")  # fmt: skip
    bad = [b for b in wanted if any(side % multiple for side in train_size(b, cfg.train.max_side, multiple))]
    if bad:
        raise RunError(f"bucket(s) {', '.join(f'{w}x{h}' for w, h in bad)} do not divide by {multiple}, which "
                       f"config {cfg.name!r} needs (2^(levels-1) x the space's stride); set train.buckets")  # fmt: skip
    return {b: counts[b] for b in wanted}


def prepare_run(req: TrainRequest) -> tuple[WnetConfig, TagVocab]:
    """Create ``RUN/run.json`` or check that it matches the request; returns the config and vocabulary."""
    os.makedirs(req.run, exist_ok=True)
    path = os.path.join(req.run, "run.json")
    build = open_build(req.build).out
    if os.path.exists(path):
        saved = _read_json(path)
        old_cfg, new_cfg = dict(saved["config"]), req.config.to_dict()
        old_cfg["train"] = {k: v for k, v in old_cfg["train"].items() if k != "steps"}
        new_cfg["train"] = {k: v for k, v in new_cfg["train"].items() if k != "steps"}
        diffs = differences(old_cfg, new_cfg)
        if diffs:
            raise RunError(f"{req.run} was started with config {saved['config'].get('name')!r}; this request differs in "
                           + "; ".join(d.replace("(checkpoint)", "(run)") for d in diffs[:6]) + ". Use a new --run.")  # fmt: skip
        if saved["build"] != build:
            raise RunError(f"{req.run} trains on {saved['build']}, not {build}; use a new --run")
        return req.config, TagVocab.from_json(saved["vocab"])
    if os.listdir(req.run):
        raise RunError(f"{req.run} exists, is not empty and is not a W-net run; choose another --run")
    layout = open_build(build)
    vocab = TagVocab.from_manifest(layout, req.config.model.vocab_per_category)
    _write_json(
        path, {"format": RUN_FORMAT, "build": build, "config": req.config.to_dict(), "vocab": vocab.to_json()}
    )
    return req.config, vocab


# ---------------------------------------------------------------- logging


class Metrics:
    """``RUN/metrics.jsonl``; on resume, lines logged after the checkpoint are dropped (they are redone)."""

    def __init__(self, run: str, resume_step: int):
        self.path = os.path.join(run, "metrics.jsonl")
        if os.path.exists(self.path):
            keep = [json.dumps(row, sort_keys=True) + "\n" for row in _metric_rows(self.path)
                    if row["step"] <= resume_step]  # fmt: skip
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.writelines(keep)

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def read_metrics(run: str) -> list[dict[str, Any]]:
    path = os.path.join(run, "metrics.jsonl")
    return _metric_rows(path) if os.path.exists(path) else []


def _metric_rows(path: str) -> list[dict[str, Any]]:
    """The whole rows of metrics.jsonl: a line torn by a kill mid-write is dropped, not fatal."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def grid_image(*columns: np.ndarray) -> np.ndarray:
    """One row per sample, one column per argument (N x H x W gray or N x H x W x 3 RGB); RGB uint8."""
    rgb = [c if c.ndim == 4 else np.repeat(c[..., None], 3, -1) for c in columns]
    return np.concatenate([np.concatenate(row, 1) for row in zip(*rgb, strict=True)], 0)


def write_png(path: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


# ---------------------------------------------------------------- the loop


def _device(req: TrainRequest) -> str:
    if req.device:
        return req.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_loop(req: TrainRequest, rank: int = 0, world: int = 1, wrap=None) -> TrainResult:
    """The training function: resume from RUN's newest checkpoint, stream, step, log, save.

    ``wrap`` (Ray Train) turns the model into its distributed form; only rank 0 writes files."""
    cfg = req.config
    vocab = TagVocab.from_json(_read_json(os.path.join(req.run, "run.json"))["vocab"])
    device = _device(req)
    trainer = Trainer(cfg, vocab, device, rank=rank)
    total = cfg.train.steps if req.steps is None else req.steps
    loader_state = None
    resumed, skipped = usable_checkpoint(req.run)
    for why in skipped if rank == 0 else ():
        print(f"linepairs train: {why}; trying the checkpoint before it", file=sys.stderr, flush=True)
    latest = resumed.checkpoint.path if resumed else None
    if resumed is not None:
        ckpt = resumed.checkpoint
        if skipped and rank == 0:
            print(f"linepairs train: resuming from {latest} (step {ckpt.step})", file=sys.stderr, flush=True)
        try:
            check_same(ckpt.state["config"], cfg)
        except WnetConfigError as exc:
            raise RunError(f"{latest}: {exc}") from None
        trainer.load(resumed.model, resumed.ema, resumed.optimizer, ckpt.step)
        states = ckpt.state.get("loader_states") or []
        loader_state = states[rank] if rank < len(states) else None
        if len(states) != world:
            raise RunError(
                f"{latest} was written by {len(states)} worker(s); resume it with --workers {len(states) or 1}"
            )
    if wrap is not None:
        trainer.ddp = wrap(trainer.model)
    buckets = [tuple(b) for b in cfg.train.buckets] or None
    stream = open_stream(req.build, cfg, rank=rank, world=world, state=loader_state, buckets=buckets)
    writer = rank == 0
    metrics = Metrics(req.run, trainer.step) if writer else None
    preview = _preview_batch(req.build, cfg, buckets) if writer and cfg.train.sample_every else None
    bar = _progress(trainer.step, total, writer and req.show_progress)
    last_loss, last_saved = None, latest
    started, seen = time.perf_counter(), 0
    heldout = heldout_batch(req.build, cfg, 16, buckets) if writer and cfg.train.eval_every else []

    def save(states: list[Any]) -> str:
        return save_checkpoint(
            req.run, trainer.step, **trainer.state_dicts(), keep=cfg.train.keep_checkpoints,
            state={"config": cfg.to_dict(), "vocab": vocab.to_json(), "loader_states": states,
                   "space": {"channels": trainer.space.channels, "stride": trainer.space.stride},
                   "build": req.build, "world": world},
        )  # fmt: skip

    try:
        while trainer.step < total:
            batch = next(stream)
            try:
                out = trainer.train_step(batch)
            except LossIsNaN as exc:
                states = _gather(stream.state(), world)
                kept = save(states) if writer else last_saved
                raise RunError(f"{exc}; stopped, checkpoint kept at {kept}") from None
            last_loss = out["loss"]
            seen += len(batch.keys) * world
            step = trainer.step
            if writer and (step % cfg.train.log_every == 0 or step == total):
                elapsed = time.perf_counter() - started
                row = {"step": step, **out, "samples_per_s": seen / max(elapsed, 1e-9), "bucket": list(batch.bucket),
                       "data_wait_s": stream.wait_s, "time": time.time()}  # fmt: skip
                if heldout and step % cfg.train.eval_every == 0:
                    row["heldout_loss"] = heldout_loss(trainer, heldout)
                metrics.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            if step % cfg.train.checkpoint_every == 0 or step == total:
                states = _gather(stream.state(), world)
                if writer:
                    last_saved = save(states)
            if writer and preview is not None and (step % cfg.train.sample_every == 0 or step == total):
                generated = trainer.painter().paint(
                    preview.lines, [m.get("tags") or {} for m in preview.meta], seed=cfg.train.seed
                )
                write_png(
                    os.path.join(req.run, "samples", f"step-{step:08d}.png"),
                    grid_image(preview.lines, generated, preview.images),
                )
    finally:
        if bar is not None:
            bar.close()
        stream.close()
    return TrainResult(req.run, trainer.step, last_saved, last_loss)


def heldout_loss(trainer: Trainer, batches: list) -> float:
    """The EMA model's fixed-noise loss over held-out batches, weighted by batch size."""
    total = sum(len(b.keys) for b in batches)
    return sum(trainer.fixed_loss(b, seed=i, ema=True) * len(b.keys) for i, b in enumerate(batches)) / total


def _gather(state: Any, world: int) -> list[Any]:
    """Every rank's loader state, in rank order (all ranks must call this together)."""
    if world == 1:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, state)
    return out


def _preview_batch(build: str, cfg: WnetConfig, buckets):
    """A fixed handful of samples for the periodic grid (its own stream, so training draws are unaffected)."""
    stream = open_stream(build, cfg.replace(train={"batch_size": min(4, cfg.train.batch_size)}), rank=0, world=1,
                         state=None, buckets=buckets, seed_offset=7919, prefetch=0)  # fmt: skip
    try:
        return next(stream)
    finally:
        stream.close()


def _progress(start: int, total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc="train",
        unit=" steps",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


# ---------------------------------------------------------------- entry points


def train(req: TrainRequest) -> TrainResult:
    """Prepare RUN, then run the loop here or on Ray Train workers."""
    req.run, req.build = os.path.abspath(req.run), open_build(req.build).out
    cfg = req.config
    check_build(req.build, cfg, 2 ** (len(cfg.model.channels) - 1) * _space_stride(cfg))
    prepare_run(req)
    if req.workers and req.workers > 0:
        from .distributed import train_on_ray

        return train_on_ray(req)
    return train_loop(req)


def _space_stride(cfg: WnetConfig) -> int:
    try:
        return space_stride(cfg.space.vae)
    except SpaceError as exc:
        raise RunError(str(exc)) from None


def config_of_run(run: str) -> WnetConfig:
    path = os.path.join(run, "run.json")
    if not os.path.isfile(path):
        raise RunError(f"{run} is not a W-net run (no run.json)")
    try:
        return config_from_dict(_read_json(path)["config"])
    except WnetConfigError as exc:
        raise RunError(f"{path}: {exc}") from None


__all__ = [
    "RunError",
    "TrainRequest",
    "TrainResult",
    "check_build",
    "config_of_run",
    "prepare_run",
    "read_metrics",
    "train",
    "train_loop",
]
