"""W-net ``tiny`` on CPU: what the trainer reaches in a few minutes on real pairs, and how fast.

Builds 8 corpus illustrations at 32x32 with canny lines (embedded Ray), then, through
sharding.loader: training steps/s (median over ``--repeats`` timings of 20 steps), the fixed-batch
loss before and after 300 steps of overfitting the 8 pairs, sketch alignment of the paintings
(edge F1 / Chamfer against their own vs a mismatched sketch) and the effect of swapping a tag.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

import lineart
from sharding.loader import batches
from wnet.config import PRESETS
from wnet.metrics import edge_scores, mismatched
from wnet.trainer import Trainer
from wnet.vocab import TagVocab

from ..demo import tiny_demo_build
from ..errors import UsageError
from ..paths import corpus_illustrations

STEPS = 300


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
        build = tiny_demo_build(folder, root, n=8)
        pairs = next(iter(batches(build, 8, seed=0, resampled=False, weighted=False)))
        vocab = TagVocab.from_manifest(os.path.join(build, "manifest.parquet"), 100)
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
        diff = float(
            np.abs(painter.paint(pairs.lines, swapped, seed=0).astype(int) - painted.astype(int)).mean()
        )
        return {
            "config": "tiny", "pixels": "32x32", "pairs": len(pairs.keys), "batch": 8, "torch_threads": 1,
            "step_s_median": statistics.median(timings), "steps_per_s": 1 / statistics.median(timings),
            "fixed_loss_before": before, f"fixed_loss_after_{STEPS}": after, "loss_ratio": after / before,
            "edge_f1_matched": own["f1"], "edge_f1_mismatched": other["f1"], "edge_f1_gap": own["f1"] - other["f1"],
            "chamfer_matched": own["chamfer"], "chamfer_mismatched": other["chamfer"],
            "tag_swap_mean_abs_diff": diff, "paint_8_images_s": paint_s, "sample_steps": painter.cfg.sample.steps,
        }  # fmt: skip
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(root, ignore_errors=True)
