"""Every sample's fate before a byte is written, from the manifest and the weight version alone:
its drawing (or why it has none), whether it is held out, and its draws per epoch; the intended and
realised shares; and the identity DEST records for resume and refusal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sharding.buckets import preset_for
from sharding.captions import CaptionError, CaptionRule

from . import repeats as rep
from .dest import EXPORT_VERSION
from .drawings import LEFT_OUT, DrawingChoice, DrawingError, key_uniforms
from .request import ExportRequest
from .source import Build, ExportError
from .target import TRAIN, VALIDATION, Target

LEFT = "left_out"
NO_DRAWING, NO_DRAWS = "no_drawing", "no_draws"  # why a sample is left out
KEY_CHUNK = 65536  # keys hashed at a time (bounded Python objects)


@dataclass
class Plan:
    """Every sample's fate, in population order."""

    fate: np.ndarray  # object array of TRAIN / VALIDATION / LEFT
    reason: np.ndarray  # object array
    choice: np.ndarray  # index into choice.names, -1 when none
    case: np.ndarray  # FIRST / FALLBACK / LEFT_OUT
    counts: np.ndarray  # int64 draws per epoch (train), 1 (validation), 0
    repeats: rep.Repeats
    drawing: DrawingChoice
    invert: bool
    rule: CaptionRule
    resolution: int
    shares: dict[str, Any]
    warnings: list[str]


def _labels(build: Build) -> dict[str, np.ndarray]:
    pop = build.pop
    names = lambda xs: np.asarray(xs, dtype=object)  # noqa: E731
    buckets = names([f"{w}x{h}" for w, h in pop.buckets])
    return {
        "source": names(pop.source_names)[pop.sources],
        "tier": names(pop.tier_names)[pop.tiers],
        "bucket": buckets[pop.bucket_of],
    }


def _uniforms(build: Build, seed: int, salt: str) -> np.ndarray:
    keys = build.pop.keys
    return np.concatenate(
        [
            key_uniforms(keys.slice(i, KEY_CHUNK).to_pylist(), seed, salt)
            for i in range(0, len(keys), KEY_CHUNK)
        ]
        or [np.zeros(0)]
    )


def plan_export(build: Build, req: ExportRequest, target: Target) -> Plan:
    """Fates, drawings and repeats of every sample, from the manifest and the weights alone."""
    pop = build.pop
    n = len(pop)
    try:
        drawing = DrawingChoice.parse(req.extractor, build.extractors)
        rule = CaptionRule.parse(req.caption_order, req.underscores)
    except (DrawingError, CaptionError) as exc:
        raise ExportError(str(exc)) from None
    choice, case = drawing.choose(
        _uniforms(build, req.seed, "drawing"), pop.extractor_names, pop.extractor_sets
    )
    fate = np.full(n, TRAIN, dtype=object)
    reason = np.full(n, "", dtype=object)
    fate[case == LEFT_OUT], reason[case == LEFT_OUT] = LEFT, NO_DRAWING
    if req.val:
        candidates = np.flatnonzero(fate == TRAIN)
        if req.val >= len(candidates):
            raise ExportError(f"--val {req.val}: the build has only {len(candidates)} samples to export")
        held = candidates[
            np.argsort(_uniforms(build, req.seed, "validation")[candidates], kind="stable")[: req.val]
        ]
        fate[held] = VALIDATION
    labels = _labels(build)
    train = fate == TRAIN
    if not train.any():
        raise ExportError(
            f"nothing to train on: {int(np.sum(case == LEFT_OUT))} of {n} samples have none of the drawings "
            f"{', '.join(drawing.names)} and {int(np.sum(fate == VALIDATION))} are held out"
        )
    # rounding errors are carried along source, tier, bucket (each group keeps its share) and, within
    # a group, by weight (samples that round between the same two counts sit together): repeats.py
    order = np.lexsort((np.arange(n), pop.weights, pop.bucket_of, pop.tiers, pop.sources))
    weights = carried_weights(pop.weights, train, [pop.sources, pop.tiers, pop.bucket_of])
    solved = rep.solve(weights, order, req.repeat_levels if target.levels_limited else None)
    counts = solved.counts
    dropped = train & (counts == 0)
    fate[dropped], reason[dropped] = LEFT, NO_DRAWS
    counts = np.where(fate == VALIDATION, 1, counts)
    table = rep.share_table(pop.weights, np.where(fate == TRAIN, counts, 0), labels)
    resolution = req.resolution or target.resolution
    lost = [k for k, v in table["source"].items() if v["intended"] > 0 and v["realised"] == 0]
    warnings = _bucket_warnings(build, resolution, target) + [
        f"source {k!r} has no sample left to export (its drawings are not in --extractor, or all are held "
        f"out): its {table['source'][k]['intended']:.1%} of the draws goes to the other sources"
        for k in lost
    ]
    return Plan(
        fate=fate, reason=reason, choice=choice, case=case, counts=counts, repeats=solved, drawing=drawing,
        invert=target.invert if req.invert is None else req.invert, rule=rule, resolution=resolution,
        shares=table, warnings=warnings,
    )  # fmt: skip


def carried_weights(weights: np.ndarray, kept: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
    """The weights of the ``kept`` samples, scaled so that they carry the draws of the samples held
    out or left out: within their (source, tier, bucket) cell, else their (source, tier), else their
    source (``codes``: finest grouping first). So every source, tier and bucket keeps its intended
    share; only a source with nothing left loses its draws (and export.json says so)."""
    out = np.where(kept, weights, 0.0)
    pending = np.where(kept, 0.0, weights)  # draws still looking for a sample to carry them
    for depth in range(len(codes), 0, -1):
        cell = np.unique(np.stack(codes[:depth], 1), axis=0, return_inverse=True)[1].reshape(-1)
        have = np.bincount(cell, weights=out)
        need = np.bincount(cell, weights=pending, minlength=len(have))
        factor = np.divide(have + need, have, out=np.ones_like(have), where=have > 0)
        out = out * factor[cell]
        pending = np.where(have[cell] > 0, 0.0, pending)
    return out


def _bucket_warnings(build: Build, resolution: int, target: Target) -> list[str]:
    largest = max(w * h for w, h in build.pop.buckets)
    if largest >= resolution * resolution:
        return []
    preset = preset_for(resolution)
    fix = (
        f'build with `[buckets] preset = "{preset}"`' if preset else "build with a larger [buckets] max_area"
    )
    return [
        f"the build's largest bucket ({largest} pixels) is smaller than the {resolution}x{resolution} this "
        f"export trains at (--resolution): {target.name} will upscale the images or train below the model's "
        f"size; {fix} (docs/config.md, Buckets)"
    ]


def identity(build: Build, req: ExportRequest, plan: Plan) -> dict[str, Any]:
    """What DEST records: a re-run with the same identity resumes, any other is refused."""
    return {
        "export_version": EXPORT_VERSION,
        "target": req.target,
        "build": {"fingerprint": build.fingerprint, "contract": build.info.get("contract")},
        "weights": {"version": build.pop.weights_name, "sha256": build.weights_sha256},
        "options": {
            "extractor": plan.drawing.describe(),
            "invert": plan.invert,
            "caption_rule": plan.rule.describe(),
            "val": req.val,
            "repeat_levels": req.repeat_levels,
            "resolution": plan.resolution,
            "seed": req.seed,
        },
    }


__all__ = ["LEFT", "NO_DRAWING", "NO_DRAWS", "Plan", "carried_weights", "identity", "plan_export"]
