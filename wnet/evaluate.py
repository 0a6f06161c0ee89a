"""``linepairs eval RUN``: does the model follow the sketch, and how well does it denoise unseen samples?

Alignment: paint each sample from its own sketch and tags, re-extract lines from the painting with
the project's own extractor (``lineart.create``: the extractor that drew that sketch), and score them
against the input sketch and, as the chance baseline, against other samples' sketches of the same
training size drawn by the same extractor (tolerant edge F-score and Chamfer distance,
``wnet.metrics``). A model that follows the sketch scores clearly better matched than mismatched.

The scored units are (sample, extractor) pairs: every line drawing of every sample, held-out samples
first, then the rest in a fixed hash order, up to ``limit`` units; a unit whose sketch has no ink at
training size (``no_ink``) or no partner of its size and extractor (``unpaired``) is left out. Each unit is painted with ``seeds`` noise seeds. The spread
of the gap is reported two ways: a bootstrap over units (95% interval) and the gap per seed, so a
gap is judged against its own noise.
Held-out loss: the EMA model's fixed-noise loss on the run's held-out keys (never trained on).
Writes ``RUN/eval/contact.png`` (sketch | generated | target | re-extracted) and ``RUN/eval/scores.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

import lineart
from sharding.layout import Layout
from sharding.loader import Batch, batches

from .data import fit_batch, heldout_batch, is_heldout
from .metrics import pair_scores
from .painter import Painter
from .run import RunError, grid_image, write_png
from .trainer import fixed_loss

PARTNERS = 3  # mismatched sketches per unit (the next ones of its group, cyclically)
BOOTSTRAP = 2000  # resamples of the units for the gap's interval


def build_extractors(build: str) -> dict[str, Any]:
    """The build's extractors as it recorded them in build.json (options and weights path), made once,
    before any painting: a learned extractor without its weights fails here, in one line."""
    from sharding.layout import StorageError

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


def _extract(images: np.ndarray, name: str, made: dict[str, Any]) -> np.ndarray:
    if name not in made:  # a build.json from before extractor records: the defaults
        made[name] = lineart.create(name)
    return made[name](images)


def _order(key: str) -> bytes:
    return hashlib.blake2b(key.encode(), digest_size=8, person=b"wnet-eval").digest()


def alignment_groups(build: str, painter: Painter, limit: int) -> tuple[list[Batch], int, int]:
    """The scored units grouped by (training size, extractor), each group one Batch of >= 2 samples;
    how many units were left out for want of a partner; and how many for having no ink at training
    size (a thin line area-resized 8x is grey, not ink: such a reference scores every painting alike)."""
    cfg = painter.cfg
    layout = Layout(build)
    table = layout.read_parquet(layout.manifest, columns=["key", "bucket_w", "bucket_h", "extractors"])
    wanted = {tuple(b) for b in cfg.train.buckets} or None
    rows = [
        (k, [n for n in names if cfg.train.extractor in (None, n)])
        for k, w, h, names in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
        if wanted is None or (w, h) in wanted
    ]
    rows.sort(key=lambda r: (not is_heldout(r[0], cfg.train.heldout), _order(r[0])))
    reader = batches(build, 1, seed=cfg.train.seed, extractor=cfg.train.extractor)
    groups: dict[tuple, list[Batch]] = {}
    units = no_ink = 0
    for start in range(0, len(rows), 16):
        if units >= limit:
            break
        part = rows[start : start + 16]
        for sample, (_, names) in zip(reader.samples([k for k, _ in part]), part, strict=True):
            for name in names:
                if units >= limit:
                    break
                one = fit_batch(Batch(
                    keys=[sample["key"]], bucket=tuple(sample["meta"]["bucket"]), images=sample["image"][None],
                    lines=sample["lines"][name][None], extractors=[name], meta=[sample["meta"]],
                ), cfg, painter.size_multiple)  # fmt: skip
                if not (one.lines < 128).any():
                    no_ink += 1
                    continue
                groups.setdefault((one.lines.shape[1:], name), []).append(one)
                units += 1
    out, unpaired = [], 0
    for (_, name), parts in sorted(groups.items()):
        if len(parts) < 2:
            unpaired += len(parts)
            continue
        out.append(Batch(
            keys=[b.keys[0] for b in parts], bucket=parts[0].bucket,
            images=np.concatenate([b.images for b in parts]), lines=np.concatenate([b.lines for b in parts]),
            extractors=[name] * len(parts), meta=[b.meta[0] for b in parts],
        ))  # fmt: skip
    return out, unpaired, no_ink


def _paint(painter: Painter, group: Batch, seed: int) -> np.ndarray:
    """The group painted in chunks of the training batch size (each chunk its own noise from ``seed``)."""
    size = painter.cfg.train.batch_size
    out = []
    for i, start in enumerate(range(0, len(group.keys), size)):
        tags = [m.get("tags") or {} for m in group.meta[start : start + size]]
        out.append(painter.paint(group.lines[start : start + size], tags, seed=seed * 7919 + i))
    return np.concatenate(out)


def _unit_scores(back: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Per unit: matched F1, matched Chamfer, mismatched F1, mismatched Chamfer (mean over partners)."""
    n = len(lines)
    out = np.empty((n, 4))
    for i in range(n):
        out[i, :2] = pair_scores(back[i], lines[i])
        others = [pair_scores(back[i], lines[(i + d) % n]) for d in range(1, min(PARTNERS, n - 1) + 1)]
        out[i, 2:] = np.mean(others, axis=0)
    return out


def gap_interval(gaps: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval (percentile) of the mean per-unit gap."""
    rng = np.random.default_rng(seed)
    means = gaps[rng.integers(0, len(gaps), (BOOTSTRAP, len(gaps)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def evaluate(run: str, limit: int = 48, seed: int = 0, device: str = "cpu", seeds: int = 1) -> dict[str, Any]:
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
    if seeds < 1:
        raise RunError("--seeds must be at least 1")
    made = build_extractors(build)

    groups, unpaired, no_ink = alignment_groups(build, painter, limit)
    if not groups:
        raise RunError(f"no two samples of one size and extractor in {build} for the alignment scores")
    per_seed, rows = [], []  # per_seed[s]: units x 4
    for s in range(seeds):
        scores = []
        for group in groups:
            generated = _paint(painter, group, seed + s)
            back = _extract(generated, group.extractors[0], made)
            scores.append(_unit_scores(back, group.lines))
            if s == 0 and sum(len(r[0]) for r in rows) < 8:
                rows.append((group.lines[:8], generated[:8], group.images[:8], back[:8]))
        per_seed.append(np.concatenate(scores))
    units = np.mean(per_seed, axis=0)  # each unit's scores averaged over the seeds
    held = np.array([is_heldout(k, cfg.train.heldout) for g in groups for k in g.keys])
    gaps = units[:, 0] - units[:, 2]
    lo, hi = gap_interval(gaps, seed)

    heldout = heldout_batch(build, cfg, 16, buckets, painter.size_multiple)
    loss = sum(fixed_loss(painter.model, painter, b, seed=j) * len(b.keys) for j, b in enumerate(heldout))
    held_n = sum(len(b.keys) for b in heldout)
    result = {
        "run": run,
        "step": painter.step,
        "samples": len(units),
        "unpaired": unpaired,
        "no_ink": no_ink,
        "seeds": seeds,
        "edge_f1_matched": float(units[:, 0].mean()),
        "edge_f1_mismatched": float(units[:, 2].mean()),
        "edge_f1_gap": float(gaps.mean()),
        "edge_f1_gap_ci95": [lo, hi],
        "edge_f1_gap_per_seed": [float((p[:, 0] - p[:, 2]).mean()) for p in per_seed],
        "edge_f1_gap_heldout": float(gaps[held].mean()) if held.any() else None,
        "heldout_units": int(held.sum()),
        "chamfer_matched": float(units[:, 1].mean()),
        "chamfer_mismatched": float(units[:, 3].mean()),
        "heldout_loss": loss / held_n if held_n else None,
        "heldout_samples": held_n,
    }
    os.makedirs(os.path.join(run, "eval"), exist_ok=True)
    sheet = [grid_image(*r) for r in rows]
    width = max(p.shape[1] for p in sheet)
    sheet = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in sheet]
    write_png(os.path.join(run, "eval", "contact.png"), np.concatenate(sheet, 0))
    with open(os.path.join(run, "eval", "scores.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
    return result


__all__ = ["alignment_groups", "evaluate", "gap_interval"]
