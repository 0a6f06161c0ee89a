"""W-net ``tiny`` on CPU: what the trainer reaches on real pairs, and how fast beside its floor.

Two parts, one torch thread (a busy 2-core machine loses more to OpenMP barriers than a second
thread gains; the prefetch thread has the other core):

* ``toy``-style keys at the top level: 8 corpus illustrations at 32x32 with canny lines, through
  sharding.loader: steps/s on one fixed batch (median over ``--repeats`` timings of 20 steps), the
  fixed-batch loss before and after 300 steps of overfitting, sketch alignment of the paintings
  (edge F1 / Chamfer against their own vs a mismatched sketch) and the effect of swapping a tag.
* ``real_build``: the corpus built with the default config (512-832 px buckets, canny + xdog), then
  exactly what ``linepairs train OUT --config tiny`` runs (300 steps at 64 px: data decoded at
  training size, prefetched, previews, held-out loss, checkpoints), in this process on one thread,
  and ``linepairs eval`` (every scoreable unit, two noise seeds: the gap with its bootstrap interval
  and per-seed values). Beside it, the floor: the same Trainer stepping on random arrays of the same
  shapes (no data at all), measured in the same run before and after, so the ratio holds on a
  shared machine (CPU seconds, too). Then ``cli``: the same command in its own process with torch's
  default threads (the goal's setting: wall, CPU, load average). Also the per-sample decode cost of
  the three ways to get a sample at 64 px.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import torch

import lineart
from curation.sources import parse_source
from sharding.loader import batches, decode_gray, decode_rgb
from wnet.checkpoint import latest_checkpoint, open_checkpoint
from wnet.config import PRESETS
from wnet.data import DecodeCache, decode_at, decode_batch, open_stream, train_size
from wnet.evaluate import evaluate
from wnet.metrics import edge_scores, mismatched
from wnet.parts import plain_parts
from wnet.run import TrainRequest, read_metrics, train
from wnet.trainer import Trainer
from wnet.vocab import TagVocab

from ..build.request import BuildRequest
from ..build.run import run_build
from ..config import BuildConfig
from ..demo import tiny_demo_build
from ..errors import UsageError
from ..paths import corpus_illustrations

STEPS = 300
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOOR_STEPS = 10  # random-array steps per floor timing
CLI_LIMIT_S = 600  # the default-threads CLI run stops here (a busy machine)
EVAL_KEYS = ("samples", "unpaired", "no_ink", "seeds", "edge_f1_matched", "edge_f1_mismatched", "edge_f1_gap",
             "edge_f1_gap_ci95", "edge_f1_gap_per_seed", "edge_f1_gap_heldout", "heldout_units",
             "chamfer_matched", "chamfer_mismatched", "heldout_loss")  # fmt: skip


def run(args) -> dict[str, Any]:
    folder = args.corpus or corpus_illustrations()
    if not folder or not os.path.isdir(folder):
        raise UsageError(
            "no corpus: pass --corpus FOLDER (the default ../shared/corpus/illustrations is absent)"
        )
    root = tempfile.mkdtemp(prefix="lp-bench-wnet-")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {**_toy(folder, root, args), "real_build": _real_build(folder, root, args)}
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(root, ignore_errors=True)


def _toy(folder: str, root: str, args) -> dict[str, Any]:
    build = tiny_demo_build(folder, os.path.join(root, "toy"), n=8)
    pairs = next(iter(batches(build, 8, seed=0, resampled=False, weighted=False)))
    vocab = TagVocab.from_manifest(build, 100)
    trainer = Trainer(PRESETS["tiny"].replace(train={"batch_size": 8, "flip": 0.0, "warmup": 10}), vocab)
    before = trainer.fixed_loss(pairs)
    timings = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        for _ in range(20):
            trainer.train_step(pairs)
        timings.append((time.perf_counter() - start) / 20)
    while trainer.step < STEPS:
        trainer.train_step(pairs)
    after = trainer.fixed_loss(pairs)
    painter = trainer.painter()
    tags = [m["tags"] for m in pairs.meta]
    start = time.perf_counter()
    painted = painter.paint(pairs.lines, tags, seed=0)
    paint_s = time.perf_counter() - start
    back = lineart.create("canny")(painted)
    own, other = edge_scores(back, pairs.lines), edge_scores(back, mismatched(pairs.lines))
    swapped = [{**t, "general": ["cool" if "warm" in t["general"] else "warm"]} for t in tags]
    diff = float(np.abs(painter.paint(pairs.lines, swapped, seed=0).astype(int) - painted.astype(int)).mean())
    return {
        "config": "tiny", "pixels": "32x32", "pairs": len(pairs.keys), "batch": 8, "torch_threads": 1,
        "step_s_median": statistics.median(timings), "steps_per_s": 1 / statistics.median(timings),
        "fixed_loss_before": before, f"fixed_loss_after_{STEPS}": after, "loss_ratio": after / before,
        "edge_f1_matched": own["f1"], "edge_f1_mismatched": other["f1"], "edge_f1_gap": own["f1"] - other["f1"],
        "chamfer_matched": own["chamfer"], "chamfer_mismatched": other["chamfer"],
        "tag_swap_mean_abs_diff": diff, "paint_8_images_s": paint_s, "sample_steps": painter.cfg.sample.steps,
    }  # fmt: skip


def _real_build(folder: str, root: str, args, steps: int | None = None) -> dict[str, Any]:
    """``steps``: None runs the preset's (300); fewer only to try the bench quickly."""
    out, run_dir = os.path.join(root, "real", "out"), os.path.join(root, "real", "run")
    start = time.perf_counter()
    run_build(BuildRequest([parse_source(f"demo={folder}")], out, BuildConfig(), show_progress=False))
    build_s = time.perf_counter() - start
    cfg = PRESETS["tiny"]
    vocab = TagVocab.from_manifest(out, cfg.model.vocab_per_category)
    fixed = _fixed_batches(out, cfg, 4)
    shapes = [(len(b.keys), b.images.shape[1], b.images.shape[2]) for b in _fixed_batches(out, cfg, 20)]
    floor_before = _floor(cfg, vocab, shapes, args.repeats)

    load_before = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    result = train(TrainRequest(out, run_dir, cfg, steps=steps, show_progress=False))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    load_after = os.getloadavg()[0]
    floor_after = _floor(cfg, vocab, shapes, args.repeats)
    rows = read_metrics(run_dir)
    first, last = rows[0], rows[-1]
    # Steady rate between the first and last logged steps (startup excluded); previews, held-out
    # losses and checkpoints inside that span are included, as the user sees them.
    loop_step_s = (last["time"] - first["time"]) / (last["step"] - first["step"])
    floor_step_s = (floor_before[0] + floor_after[0]) / 2
    floor_cpu_step_s = (floor_before[1] + floor_after[1]) / 2

    trainer = Trainer(cfg, TagVocab.from_json(json.load(open(os.path.join(run_dir, "run.json")))["vocab"]))
    loss_before = float(np.mean([trainer.fixed_loss(b, seed=i) for i, b in enumerate(fixed)]))
    ckpt = open_checkpoint(latest_checkpoint(run_dir))
    trainer.load(ckpt.weights("model"), ckpt.weights("ema"), ckpt.optimizer(), ckpt.step)
    loss_after = float(np.mean([trainer.fixed_loss(b, seed=i) for i, b in enumerate(fixed)]))
    scores = evaluate(run_dir, limit=48, seeds=2)
    cli = _cli_train(out, os.path.join(root, "real", "cli"), steps)
    return {
        "build": "shared illustrations, default build config", "samples": _samples(out),
        "build_s": build_s, "config": "tiny", "max_side": cfg.train.max_side, "batch": cfg.train.batch_size,
        "model": {"unet": "diffusers UNet2DConditionModel", "channels": list(cfg.model.channels),
                  "attn_levels": list(cfg.model.attn_levels),
                  "sketch_channels": list(cfg.model.sketch_channels), "prediction": cfg.diffusion.prediction,
                  "parameters": sum(p.numel() for p in trainer.model.parameters())},
        "torch_threads": 1, "steps": result.step,
        "train_wall_s": wall, "steps_per_s": result.step / wall,
        "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
        # CPU seconds barely depend on what else the machine runs: on a quiet machine wall ~ CPU.
        "train_cpu_s": cpu, "cpu_step_s": cpu / max(1, result.step),
        "floor_cpu_step_s": floor_cpu_step_s, "cpu_over_floor": cpu / max(1, result.step) / floor_cpu_step_s,
        "loop_step_s": loop_step_s, "loop_steps_per_s": 1 / loop_step_s,
        "data_wait_s": last.get("data_wait_s"),
        "floor_step_s": floor_step_s, "floor_steps_per_s": 1 / floor_step_s,
        "floor_step_s_before_after": [floor_before[0], floor_after[0]],
        "loop_over_floor": loop_step_s / floor_step_s,
        "fixed_loss_before": loss_before, "fixed_loss_after": loss_after,
        "loss_ratio": loss_after / loss_before,
        "logged_loss_first_last": [first["loss"], last["loss"]],
        "eval": {k: scores[k] for k in EVAL_KEYS},
        "cli": cli,
        "decode_ms_per_sample": _decode_costs(out, cfg, args.repeats),
    }  # fmt: skip


def _cli_train(build: str, run_dir: str, steps: int | None) -> dict[str, Any]:
    """The goal as a user meets it: ``linepairs train OUT --config tiny`` in its own process with
    torch's default threads: wall and CPU seconds and the load average around them. On a busy
    machine OpenMP barriers make that run crawl (seconds per step), so it stops after CLI_LIMIT_S
    and says how far it got."""
    cmd = [sys.executable, "-m", "pipelines.cli", "train", build, "--config", "tiny", "--run", run_dir, "-q"]
    cmd += ["--steps", str(steps)] if steps is not None else []
    load_before = os.getloadavg()[0]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=_REPO, timeout=CLI_LIMIT_S)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not timed_out and done.returncode != 0:
        raise RuntimeError(f"linepairs train failed: {done.stderr.strip()[-2000:]}")
    rows = read_metrics(run_dir) if os.path.isdir(run_dir) else []
    return {
        "command": "linepairs train OUT --config tiny (default threads)", "cpus": os.cpu_count(),
        "steps": rows[-1]["step"] if rows else 0, "wall_s": wall, "timed_out": timed_out,
        "cpu_s": (after.ru_utime + after.ru_stime) - (used.ru_utime + used.ru_stime),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "loss_first_last": [rows[0]["loss"], rows[-1]["loss"]] if rows else None,
    }  # fmt: skip


def _samples(out: str) -> int:
    with open(os.path.join(out, "shards.json"), encoding="utf-8") as fh:
        return sum(s["samples"] for s in json.load(fh)["shards"])


def _multiple(cfg) -> int:
    return plain_parts(cfg, 3).multiple(None)


def _fixed_batches(build: str, cfg, n: int) -> list:
    stream = open_stream(build, cfg, _multiple(cfg), seed_offset=31, prefetch=0)
    try:
        return [next(stream) for _ in range(n)]
    finally:
        stream.close()


def _floor(cfg, vocab: TagVocab, shapes: list[tuple[int, int, int]], repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per train_step on random arrays shaped like the real batches: the model's own cost."""
    trainer = Trainer(cfg, vocab)
    rng = np.random.default_rng(0)
    fake = [
        SimpleNamespace(keys=[str(i) for i in range(n)], meta=[{}] * n,
                        images=rng.integers(0, 256, (n, h, w, 3), np.uint8),
                        lines=rng.integers(0, 256, (n, h, w), np.uint8))
        for n, h, w in shapes
    ]  # fmt: skip
    trainer.train_step(fake[0])  # first-call allocations
    timings, cpu = [], []
    for _ in range(max(1, repeats)):
        start, used = time.perf_counter(), time.process_time()
        for i in range(FLOOR_STEPS):
            trainer.train_step(fake[i % len(fake)])
        timings.append((time.perf_counter() - start) / FLOOR_STEPS)
        cpu.append((time.process_time() - used) / FLOOR_STEPS)
    return statistics.median(timings), statistics.median(cpu)


def _decode_costs(build: str, cfg, repeats: int) -> dict[str, float]:
    """ms per sample (illustration + line drawing) to reach the training size: the old full decode
    and area resize, the reduced decode, and a cache hit."""
    batch = next(iter(batches(build, 8, seed=0, resampled=False, weighted=False, decode=False, threads=1)))
    size = train_size(batch.bucket, cfg.train.max_side, _multiple(cfg))
    keep = list(range(len(batch.keys)))

    def full():
        for image, lines in zip(batch.image_bytes, batch.line_bytes, strict=True):
            cv2.resize(decode_rgb(image), size, interpolation=cv2.INTER_AREA)
            cv2.resize(decode_gray(lines), size, interpolation=cv2.INTER_AREA)

    def reduced():
        for image, lines in zip(batch.image_bytes, batch.line_bytes, strict=True):
            decode_at(image, batch.bucket, size, True)
            decode_at(lines, batch.bucket, size, False)

    cache = DecodeCache()
    decode_batch(batch, keep, size, cache)

    def cached():
        decode_batch(batch, keep, size, cache)

    out = {"bucket": f"{batch.bucket[0]}x{batch.bucket[1]}", "train_size": f"{size[0]}x{size[1]}"}
    for name, fn in (("full_decode_area_resize", full), ("reduced_decode", reduced), ("cache_hit", cached)):
        timings = []
        for _ in range(max(3, repeats)):
            start = time.perf_counter()
            fn()
            timings.append((time.perf_counter() - start) / len(keep) * 1000)
        out[name] = statistics.median(timings)
    jpeg = [decode_at(b, batch.bucket, size, True) for b in batch.image_bytes]
    area = [cv2.resize(decode_rgb(b), size, interpolation=cv2.INTER_AREA) for b in batch.image_bytes]
    out["reduced_vs_full_mean_abs_diff"] = float(
        np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(jpeg, area, strict=True)])
    )
    return out
