"""Weights into whole repeats: what trainers that shuffle uniformly can take.

kohya sd-scripts and ai-toolkit know one integer ``num_repeats`` per folder, SimpleTuner one
``repeats`` per dataset, diffusers' script only rows. A sample of weight ``w`` should be drawn
``w / w_min`` times as often as the lightest one, so:

1. targets ``x = scale · w / w_min``: the lightest sample once (``scale`` 1), or more for a small
   build (at least ``MIN_DRAWS`` draws per epoch, so that the shares survive rounding to whole
   numbers), or fewer when the spread of the weights would make an epoch longer than
   ``MAX_DRAWS_PER_SAMPLE`` draws per sample (then the lightest samples get 0 or 1 row);
2. at most ``levels`` distinct counts (one folder per count): the floors and ceilings of the
   targets when there are few enough, else a geometric grid between the smallest and largest;
3. each target rounded to the count below or above it (its two neighbours in the grid) by error
   diffusion along the samples sorted by source, tier and bucket: the running sum of counts never
   strays more than half a grid step from the running sum of targets, so every source, tier and
   bucket keeps its share of draws to within one step (``export.json`` reports the realised shares).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from curation.weighting import shares

MIN_DRAWS = 1000  # draws per epoch below which the targets are scaled up
MAX_DRAWS_PER_SAMPLE = 64  # mean draws per sample above which they are scaled down
DEFAULT_LEVELS = 8  # distinct repeat counts (kohya subsets, ai-toolkit / SimpleTuner datasets)


@dataclass(frozen=True)
class Repeats:
    counts: np.ndarray  # int64 per sample: draws per epoch (0: never drawn)
    scale: float  # counts ~ scale * weight / smallest positive weight
    levels: tuple[int, ...]  # the distinct positive counts

    @property
    def draws(self) -> int:
        return int(self.counts.sum())


def grid(targets: np.ndarray, levels: int | None) -> np.ndarray:
    """The counts a target may round to (sorted, with 0 when a target is below 1)."""
    ints = np.unique(np.concatenate([np.floor(targets), np.ceil(targets)])).astype(np.int64)
    if levels is None or np.count_nonzero(ints) <= levels:
        return ints
    low, high = max(1.0, math.floor(targets.min())), float(math.ceil(targets.max()))
    steps = np.unique(np.round(np.geomspace(low, high, levels)).astype(np.int64))
    return np.unique(np.concatenate([[0] if targets.min() < 1 else [], steps])).astype(np.int64)


def diffuse(targets: np.ndarray, lo: np.ndarray, hi: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Counts in {lo, hi} per sample whose running sum along ``order`` tracks the running sum of
    ``targets`` (error diffusion). Vectorised over runs of samples that share a bracket."""
    x, low, high = targets[order], lo[order], hi[order]
    gap = (high - low).astype(np.float64)
    out = low.astype(np.float64)
    change = np.flatnonzero((low[1:] != low[:-1]) | (high[1:] != high[:-1])) + 1
    carry = 0.0  # target not yet realised, carried from run to run
    for start, end in zip(np.r_[0, change], np.r_[change, len(x)]):
        g = gap[start]
        if g == 0:
            carry += float(np.sum(x[start:end] - low[start:end]))
            continue
        used = min(max(carry, -g / 2), g / 2 * (1 - 1e-12))  # what this run can absorb
        running = used + np.cumsum(x[start:end] - low[start:end])
        rounded = np.floor(running / g + 0.5)
        picks = np.diff(np.r_[np.floor(used / g + 0.5), rounded])
        out[start:end] += g * picks
        carry = carry - used + float(running[-1] - g * rounded[-1])
    counts = np.empty(len(x), np.int64)
    counts[order] = np.rint(out).astype(np.int64)
    return counts


def solve(
    weights: np.ndarray, order: np.ndarray, levels: int | None = DEFAULT_LEVELS, min_draws: int = MIN_DRAWS
) -> Repeats:
    """Draws per epoch for each sample. ``order``: the permutation along which rounding errors are
    carried (samples of one source, tier and bucket next to each other); ``levels``: at most this
    many distinct positive counts (None: any)."""
    w = np.asarray(weights, np.float64)
    counts = np.zeros(len(w), np.int64)
    positive = w > 0
    if not positive.any():
        return Repeats(counts, 0.0, ())
    t = np.where(positive, w / w[positive].min(), 0.0)
    n, total = int(positive.sum()), float(t.sum())
    scale = float(max(1, math.ceil(min_draws / total)))
    if total > MAX_DRAWS_PER_SAMPLE * n:
        scale = MAX_DRAWS_PER_SAMPLE * n / total
    x = t * scale
    steps = grid(x[positive], levels)
    at = np.clip(np.searchsorted(steps, x, side="right") - 1, 0, len(steps) - 1)
    lo = steps[at]
    hi = steps[np.minimum(at + 1, len(steps) - 1)]
    exact = np.isclose(x, lo, rtol=0, atol=1e-9)
    hi = np.where(exact | (x <= lo), lo, hi)  # on a grid value, or at the top: no rounding
    lo, hi = np.where(positive, lo, 0), np.where(positive, hi, 0)  # weight 0: never drawn
    counts = diffuse(x, lo, hi, order)
    used = tuple(int(v) for v in np.unique(counts) if v > 0)
    return Repeats(counts, scale, used)


def share_table(
    intended: np.ndarray, realised: np.ndarray, labels: Mapping[str, Sequence[object]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per dimension (source, tier, bucket) and label: intended share of draws (from the weights)
    next to the realised one (from the counts)."""
    table = {}
    for dim, values in labels.items():
        want = shares(intended, values)
        got = shares(realised.astype(np.float64), values)
        table[dim] = {k: {"intended": round(want[k], 9), "realised": round(got.get(k, 0.0), 9)} for k in want}
    return table


def max_error(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    return {
        dim: max((abs(v["realised"] - v["intended"]) for v in rows.values()), default=0.0)
        for dim, rows in table.items()
    }


__all__ = ["DEFAULT_LEVELS", "MAX_DRAWS_PER_SAMPLE", "MIN_DRAWS", "Repeats", "diffuse", "grid", "max_error",
           "share_table", "solve"]  # fmt: skip
