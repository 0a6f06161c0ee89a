"""A training run: ``RUN/`` on disk, resumed when it exists, in-process or on Ray Train workers.

``RUN/`` holds ``run.json`` (config, build, vocabulary, parts), ``init.json`` and ``init.safetensors``
(the recipe's record and the step-0 weights), ``components/`` (what the init base brought: VAE,
tokenizer, text encoder), ``metrics.jsonl`` (one object per logged step),
``samples/step-NNNNNNNN.png`` (rows of sketch | generated | target) and ``checkpoints/``.
The same ``train_loop`` runs in this process (the default) or once per Ray Train worker; there each
rank streams its own part of the shards and rank 0 alone writes to ``RUN``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from groundwork.files import TMP_MARK, atomic_path, json_bytes, write_atomic
from sharding.layout import Layout, StorageError

from .checkpoint import save_checkpoint, usable_checkpoint
from .config import WnetConfig, WnetConfigError, check_same, config_from_dict, differences
from .data import heldout_batch, open_stream, train_size
from .parts import COMPONENTS, Parts, build_wnet, make_parts, saved_names
from .recipe import apply_recipe, init_record
from .sources import SourceError
from .space import SpaceError
from .trainer import LossIsNaN, Trainer
from .vocab import TagVocab

RUN_FORMAT = 2  # 2: parts, init.json and init.safetensors (1: the hand-written UNet)
INIT_JSON, INIT_WEIGHTS = "init.json", "init.safetensors"
PREPARED = (COMPONENTS, INIT_JSON, INIT_WEIGHTS)  # what preparing a run writes before run.json


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
    latent_cache: str | None = None  # a latent cache folder (--cache-latents), or None
    # object-store client options of the build (--storage-option); never written into the run
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)

    def layout(self) -> Layout:
        """The build opened with the request's storage options."""
        return open_build(self.build, self.storage_options)


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
    write_atomic(path, json_bytes(data, indent=1))


def open_build(build: str | Layout, storage_options: dict[str, str] | None = None) -> Layout:
    """The build's layout (a path or URL, opened with ``storage_options``: ``--storage-option``);
    one-line RunError when it cannot be opened."""
    if isinstance(build, Layout):
        return build
    try:
        return Layout(build, storage_options or {})
    except StorageError as exc:
        raise RunError(str(exc)) from None


def check_build(build: str | Layout, cfg: WnetConfig, multiple: int | None) -> dict[tuple[int, int], int]:
    """Samples per bucket of the build that the config trains on; errors name what is missing
    (``multiple``: what the model's sides must divide by; None checks the buckets only)."""
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
    bad = [
        b
        for b in wanted
        if multiple and any(side % multiple for side in train_size(b, cfg.train.max_side, multiple))
    ]
    if bad:
        raise RunError(f"bucket(s) {', '.join(f'{w}x{h}' for w, h in bad)} do not divide by {multiple}, which "
                       f"config {cfg.name!r} needs (2^(levels-1) x the space's stride); set train.buckets")  # fmt: skip
    return {b: counts[b] for b in wanted}


def read_run(run: str) -> tuple[WnetConfig, TagVocab, Parts]:
    """A prepared run's config, vocabulary and parts (``run.json``)."""
    path = os.path.join(run, "run.json")
    if not os.path.isfile(path):
        raise RunError(f"{run} is not a W-net run (no run.json)")
    saved = _read_json(path)
    if saved.get("format") != RUN_FORMAT:
        raise RunError(f"{run} was made by another version of the trainer (run format {saved.get('format')!r}, "
                       f"this one reads {RUN_FORMAT}); start a new --run")  # fmt: skip
    try:
        cfg = config_from_dict(saved["config"])
    except WnetConfigError as exc:
        raise RunError(f"{path}: {exc}") from None
    return cfg, TagVocab.from_json(saved["vocab"]), Parts.from_json(saved["parts"])


def prepare_run(req: TrainRequest) -> tuple[WnetConfig, TagVocab, Parts]:
    """Create the run (parts in components/, init.safetensors, init.json, then run.json) or check that
    it matches the request; returns the config, the vocabulary and the parts."""
    os.makedirs(req.run, exist_ok=True)
    path = os.path.join(req.run, "run.json")
    build = req.layout().out
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
        return read_run(req.run)
    # a killed writer's temporary file (groundwork.files.TMP_MARK) is not foreign: it is removed below
    foreign = [n for n in os.listdir(req.run) if n not in PREPARED and TMP_MARK not in n]
    if foreign:
        raise RunError(f"{req.run} exists, is not empty and is not a W-net run; choose another --run")
    for name in os.listdir(req.run):  # a preparation cut short: made again from the start
        target = os.path.join(req.run, name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    cfg = req.config
    layout = req.layout()
    vocab = TagVocab.from_manifest(layout, cfg.model.vocab_per_category)
    try:
        parts, part_files = make_parts(cfg, req.run)
        initial, record = initial_weights(cfg, parts, vocab, req.run, part_files)
    except (SourceError, WnetConfigError, SpaceError) as exc:
        raise RunError(str(exc)) from None
    with atomic_path(os.path.join(req.run, INIT_WEIGHTS)) as tmp:
        save_file({k: v.contiguous() for k, v in initial.items()}, tmp)
    _write_json(os.path.join(req.run, INIT_JSON), record)
    _write_json(path, {"format": RUN_FORMAT, "build": build, "config": cfg.to_dict(), "vocab": vocab.to_json(),
                       "parts": parts.to_json()})  # fmt: skip
    return cfg, vocab, parts


def initial_weights(
    cfg: WnetConfig, parts: Parts, vocab: TagVocab, run: str, part_files: dict[str, list[str]]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The W-net's step-0 weights (the recipe's UNet tensors, seeded fresh ones for the rest) and init.json."""
    from .space import space_stride

    torch.manual_seed(cfg.train.seed)
    model = build_wnet(cfg, parts, len(vocab), run, space_stride(parts.vae_path(run)))
    unet = apply_recipe(cfg.init, model.unet)
    new = ["sketch_encoder", "connections"] + (["text (tag embedding)"] if parts.text == "tags" else [])
    record = init_record(cfg.init, unet, part_files, new)
    state = model.state_dict()
    return {k: state[k] for k in saved_names(model)}, record


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
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(tmp, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


# ---------------------------------------------------------------- the loop


def _device(req: TrainRequest) -> str:
    if req.device:
        return req.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_loop(
    req: TrainRequest, rank: int = 0, world: int = 1, wrap=None, sharded: bool = False
) -> TrainResult:
    """The training function: resume from RUN's newest checkpoint, stream, step, log, save.

    ``wrap`` (Ray Train) turns the model into its distributed form; only rank 0 writes files. With
    ``sharded`` (FSDP) every rank takes part in saving, previews and held-out losses (they gather
    the sharded weights), rank 0 still alone writes."""
    cfg, vocab, parts = read_run(req.run)
    cfg = req.config if req.config is not None else cfg
    device = _device(req)
    total = cfg.train.steps if req.steps is None else req.steps
    loader_state = None
    resumed, skipped = usable_checkpoint(req.run)
    for why in skipped if rank == 0 else ():
        print(f"linepairs train: {why}; trying the checkpoint before it", file=sys.stderr, flush=True)
    latest = resumed.checkpoint.path if resumed else None
    init = None
    if resumed is None:
        try:
            init = load_file(os.path.join(req.run, INIT_WEIGHTS))
        except Exception as exc:  # noqa: BLE001 - safetensors (SafetensorError, OSError) and torch on a cut file: one RunError line
            raise RunError(
                f"{req.run}/{INIT_WEIGHTS}: unreadable ({type(exc).__name__}); start a new --run"
            ) from None
    try:
        trainer = Trainer(cfg, vocab, device, rank=rank, parts=parts, run=req.run, init=init, wrap=wrap)
    except (WnetConfigError, SourceError, SpaceError) as exc:
        raise RunError(str(exc)) from None
    if resumed is not None:
        ckpt = resumed.checkpoint
        if skipped and rank == 0:
            print(f"linepairs train: resuming from {latest} (step {ckpt.step})", file=sys.stderr, flush=True)
        try:
            check_same(ckpt.state["config"], cfg)
            trainer.load(resumed.model, resumed.ema, resumed.optimizer, ckpt.step)
        except WnetConfigError as exc:
            raise RunError(f"{latest}: {exc}") from None
        states = ckpt.state.get("loader_states") or []
        loader_state = states[rank] if rank < len(states) else None
        if len(states) != world:
            raise RunError(
                f"{latest} was written by {len(states)} worker(s); resume it with --workers {len(states) or 1}"
            )
    buckets = [tuple(b) for b in cfg.train.buckets] or None
    multiple = parts.multiple(req.run)
    cache = None
    if req.latent_cache:
        from .latents import LatentCache

        cache = LatentCache(
            req.latent_cache, req.layout(), parts.vae_path(req.run), cfg.train.max_side, multiple
        )
    stream = open_stream(req.layout(), cfg, multiple, rank=rank, world=world, state=loader_state, buckets=buckets,
                         latents=cache)  # fmt: skip
    writer = rank == 0
    together = writer or sharded  # who computes what rank 0 writes (all ranks when weights are sharded)
    metrics = Metrics(req.run, trainer.step) if writer else None
    preview = (
        _preview_batch(req.layout(), cfg, buckets, multiple) if together and cfg.train.sample_every else None
    )
    bar = _progress(trainer.step, total, writer and req.show_progress)
    last_loss, last_saved = None, latest
    started, seen = time.perf_counter(), 0
    heldout = (
        heldout_batch(req.layout(), cfg, 16, buckets, multiple) if together and cfg.train.eval_every else []
    )

    def save(states: list[Any]) -> str | None:
        dicts = trainer.state_dicts() if together else None
        if not writer:
            return None
        return save_checkpoint(
            req.run, trainer.step, **dicts, keep=cfg.train.keep_checkpoints,
            state={"config": cfg.to_dict(), "vocab": vocab.to_json(), "loader_states": states,
                   "parts": parts.to_json(),
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
                kept = save(states) or last_saved
                raise RunError(f"{exc}; stopped, checkpoint kept at {kept}") from None
            last_loss = out["loss"]
            seen += len(batch.keys) * world
            step = trainer.step
            if together and (step % cfg.train.log_every == 0 or step == total):
                elapsed = time.perf_counter() - started
                row = {"step": step, **out, "samples_per_s": seen / max(elapsed, 1e-9), "bucket": list(batch.bucket),
                       "data_wait_s": stream.wait_s, "time": time.time()}  # fmt: skip
                if heldout and step % cfg.train.eval_every == 0:
                    row["heldout_loss"] = heldout_loss(trainer, heldout)
                if writer:
                    metrics.log(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            if step % cfg.train.checkpoint_every == 0 or step == total:
                states = _gather(stream.state(), world)
                last_saved = save(states) or last_saved
            if preview is not None and (step % cfg.train.sample_every == 0 or step == total):
                with _unsharded(trainer.model, sharded):
                    generated = trainer.paint(
                        preview.lines, [m.get("tags") or {} for m in preview.meta], seed=cfg.train.seed
                    )
                if writer:
                    write_png(
                        os.path.join(req.run, "samples", f"step-{step:08d}.png"),
                        grid_image(preview.lines, generated, preview.images),
                    )
    finally:
        if bar is not None:
            bar.close()
        stream.close()
    return TrainResult(req.run, trainer.step, last_saved, last_loss)


class _unsharded:
    """FSDP: the root's own parameters gathered while painting calls submodules directly."""

    def __init__(self, model: torch.nn.Module, sharded: bool):
        self.model = model if sharded and hasattr(model, "unshard") else None

    def __enter__(self):
        if self.model is not None:
            self.model.unshard()

    def __exit__(self, *exc):
        if self.model is not None:
            self.model.reshard()


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


def _preview_batch(build: str | Layout, cfg: WnetConfig, buckets, multiple: int):
    """A fixed handful of samples for the periodic grid (its own stream, so training draws are unaffected)."""
    stream = open_stream(build, cfg.replace(train={"batch_size": min(4, cfg.train.batch_size)}), multiple, rank=0,
                         world=1, state=None, buckets=buckets, seed_offset=7919, prefetch=0)  # fmt: skip
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


def train(req: TrainRequest, scale_out: Callable[[TrainRequest], TrainResult] | None = None) -> TrainResult:
    """Prepare RUN, fill the latent cache if asked, then run the loop here, or with ``req.workers``
    through ``scale_out`` (``pipelines.raytrain.train_on_ray``: wnet does not import Ray)."""
    if req.workers and req.workers > 0 and scale_out is None:
        raise RunError("--workers needs Ray Train: run `linepairs train --workers K`")
    req.run, req.build = os.path.abspath(req.run), req.layout().out
    check_build(req.layout(), req.config, None)
    cfg, _, parts = prepare_run(req)
    multiple = parts.multiple(req.run)
    check_build(req.layout(), cfg, multiple)
    if req.latent_cache:
        fill_latent_cache(req, cfg, parts, multiple)
    if req.workers and req.workers > 0 and scale_out is not None:
        return scale_out(req)
    return train_loop(req)


def fill_latent_cache(req: TrainRequest, cfg: WnetConfig, parts: Parts, multiple: int) -> None:
    from .latents import LatentCache, LatentCacheError
    from .space import LatentSpace

    vae = parts.vae_path(req.run)
    if vae is None:
        raise RunError("--cache-latents needs a latent space (a VAE: space.vae or an init base that has one)")
    space = LatentSpace(vae, _device(req))
    try:
        cache = LatentCache(req.latent_cache, req.layout(), vae, cfg.train.max_side, multiple)
        counts = cache.fill(space, [tuple(b) for b in cfg.train.buckets] or None)
    except LatentCacheError as exc:
        raise RunError(str(exc)) from None
    if req.show_progress:
        print(f"latent cache {cache.root}: {counts['made']} shard(s) encoded, {counts['reused']} reused",
              file=sys.stderr)  # fmt: skip


def config_of_run(run: str) -> WnetConfig:
    return read_run(run)[0]


__all__ = [
    "RunError",
    "TrainRequest",
    "TrainResult",
    "check_build",
    "config_of_run",
    "prepare_run",
    "read_metrics",
    "read_run",
    "train",
    "train_loop",
]
