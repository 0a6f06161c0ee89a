"""``linepairs eval RUN``: does the model follow the sketch, and how well does it denoise unseen samples?

Alignment: paint each sample from its own sketch and tags, re-extract lines from the painting with
the project's own extractor (``lineart.create``: the extractor that drew that sketch), and score them
against the input sketch and, as the chance baseline, against another sample's sketch of the same
bucket (tolerant edge F-score and Chamfer distance, ``wnet.metrics``). A model that follows the
sketch scores clearly better matched than mismatched.
Held-out loss: the EMA model's fixed-noise loss on the run's held-out keys (never trained on).
Writes ``RUN/eval/contact.png`` (sketch | generated | target | re-extracted) and ``RUN/eval/scores.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

import lineart

from .data import heldout_batch, open_stream
from .metrics import edge_scores, mismatched
from .painter import Painter
from .run import RunError, grid_image, write_png
from .trainer import fixed_loss


def build_extractors(build: str) -> dict[str, Any]:
    """The build's extractors as it recorded them in build.json (options and weights path), made once,
    before any painting: a learned extractor without its weights fails here, in one line."""
    from sharding.layout import Layout, StorageError

    layout = Layout(build)
    try:
        records = layout.read_json(layout.build_json).get("extractors") or {}
    except (OSError, ValueError, StorageError) as exc:
        raise RunError(f"cannot read the build's build.json ({build}): {exc}") from None
    made = {}
    for name, rec in records.items():
        try:
            made[name] = lineart.create(name, weights=rec.get("weights"), **(rec.get("options") or {}))
        except (ValueError, OSError, TypeError) as exc:  # WeightsError is a ValueError
            raise RunError(f"extractor {name!r} of build {build}: {exc}") from None
    return made


def _extract(images: np.ndarray, extractors: list[str], made: dict[str, Any]) -> np.ndarray:
    out = np.empty(images.shape[:3], np.uint8)
    for name in sorted(set(extractors)):
        idx = [i for i, e in enumerate(extractors) if e == name]
        if name not in made:  # a build.json from before extractor records: the defaults
            made[name] = lineart.create(name)
        out[idx] = made[name](images[idx])
    return out


def _head(batch, n: int):
    """The first ``n`` samples of a batch (``--limit`` counts samples, not batches)."""
    return dataclasses.replace(
        batch, keys=batch.keys[:n], images=batch.images[:n], lines=batch.lines[:n],
        extractors=batch.extractors[:n], meta=batch.meta[:n],
    )  # fmt: skip


def _alignment_batches(build: str, painter: Painter, limit: int, seed: int) -> list:
    """Batches of at least two samples (a mismatched sketch needs a partner) from the run's buckets."""
    cfg = painter.cfg
    buckets = [tuple(b) for b in cfg.train.buckets] or None
    stream = open_stream(build, cfg, buckets=buckets, seed_offset=104_729 + seed)
    out, total = [], 0
    try:
        for _ in range(200):
            if total >= limit:
                break
            batch = next(stream)
            room = limit - total
            if len(batch.keys) >= 2 and room >= 2:
                batch = _head(batch, room) if len(batch.keys) > room else batch
                out.append(batch)
                total += len(batch.keys)
    finally:
        stream.close()
    return out


def evaluate(run: str, limit: int = 16, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    painter = Painter.from_checkpoint(run, device=device)
    run_json = os.path.join(run, "run.json")
    if not os.path.isfile(run_json):
        raise RunError(f"{run} is not a W-net run (no run.json)")
    with open(run_json, encoding="utf-8") as fh:
        build = json.load(fh)["build"]
    cfg = painter.cfg
    buckets = [tuple(b) for b in cfg.train.buckets] or None
    if limit < 2:
        raise RunError("--limit must be at least 2 (a mismatched sketch needs a partner)")
    made = build_extractors(build)

    matched, mism, rows, n = [], [], [], 0
    for i, batch in enumerate(_alignment_batches(build, painter, limit, seed)):
        tags = [m.get("tags") or {} for m in batch.meta]
        generated = painter.paint(batch.lines, tags, seed=seed + i)
        lines_back = _extract(generated, batch.extractors, made)
        k = len(batch.keys)
        matched.append((edge_scores(lines_back, batch.lines), k))
        mism.append((edge_scores(lines_back, mismatched(batch.lines)), k))
        n += k
        if sum(len(r[0]) for r in rows) < 8:
            rows.append((batch.lines, generated, batch.images, lines_back))
    if n == 0:
        raise RunError(
            f"no batch of two or more samples could be drawn from {build} for the alignment scores"
        )

    def mean(scores, key):
        return sum(s[key] * k for s, k in scores) / sum(k for _, k in scores)

    heldout = heldout_batch(build, cfg, limit, buckets)
    held = sum(fixed_loss(painter.model, painter, b, seed=j) * len(b.keys) for j, b in enumerate(heldout))
    held_n = sum(len(b.keys) for b in heldout)
    result = {
        "run": run,
        "step": painter.step,
        "samples": n,
        "edge_f1_matched": mean(matched, "f1"),
        "edge_f1_mismatched": mean(mism, "f1"),
        "chamfer_matched": mean(matched, "chamfer"),
        "chamfer_mismatched": mean(mism, "chamfer"),
        "heldout_loss": held / held_n if held_n else None,
        "heldout_samples": held_n,
    }
    result["edge_f1_gap"] = result["edge_f1_matched"] - result["edge_f1_mismatched"]
    os.makedirs(os.path.join(run, "eval"), exist_ok=True)
    sheet = [grid_image(*r) for r in rows]
    width = max(p.shape[1] for p in sheet)
    sheet = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in sheet]
    write_png(os.path.join(run, "eval", "contact.png"), np.concatenate(sheet, 0))
    with open(os.path.join(run, "eval", "scores.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
    return result


__all__ = ["evaluate"]
