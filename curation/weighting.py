"""Sample weights: a quality tier from a score, constant when there is no score.

This is the first policy; the quality score is the Danbooru ``score`` as a percentile within
its source (ties broken by key, so the result is deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIGH, LOW = "high", "low"


@dataclass(frozen=True)
class Weighted:
    quality: np.ndarray  # float64 in [0, 1], NaN where the sample has no score
    tier: np.ndarray  # object array of "high" / "low"
    weight: np.ndarray  # float64


def percentile_within(groups: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each value within its group, scaled to [0, 1]; NaN values stay NaN."""
    out = np.full(len(values), np.nan)
    for group in np.unique(groups):
        idx = np.flatnonzero((groups == group) & ~np.isnan(values))
        if len(idx) == 0:
            continue
        order = idx[np.lexsort((keys[idx], values[idx]))]
        out[order] = np.arange(len(order)) / max(len(order) - 1, 1)
    return out


def first_policy(
    sources: np.ndarray,
    scores: np.ndarray,
    keys: np.ndarray,
    *,
    high_fraction: float,
    high_weight: float,
    low_weight: float,
) -> Weighted:
    quality = percentile_within(sources, scores.astype(np.float64), keys)
    # Percentiles are in [0, 1]; a sample is high-tier when it is in the top high_fraction of its source.
    is_high = (
        ~np.isnan(quality) & (quality > 1.0 - high_fraction)
        if high_fraction > 0
        else np.zeros(len(keys), bool)
    )
    tier = np.where(is_high, HIGH, LOW).astype(object)
    weight = np.where(is_high, high_weight, low_weight).astype(np.float64)
    return Weighted(quality, tier, weight)
