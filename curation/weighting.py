"""Sample weights: quality tier × tag balance × a per-source factor, clipped.

A sample's weight is its relative probability of being drawn. Weights are normalised to a mean
of 1 over the build, so a weight reads as "drawn this many times as often as under uniform
sampling", and the clip (``min_weight`` / ``max_weight``) bounds exactly that. The per-source
factor is solved *after* the clip is taken into account, so the expected share of draws of
every source equals its target whatever the source sizes (or the config is refused).

Pure NumPy over columns; no Ray, no I/O. The one place for the policy: the build calls
``compute_weights`` and ``weight_summary``; the audit calls ``shares`` and ``effective_sample_size``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .records import TAG_CATEGORIES

HIGH, LOW = "high", "low"
TIERS = (HIGH, LOW)
SHARE_TOLERANCE = 1e-6  # how far the target shares may sum away from 1 (float noise in a TOML file)


# Ranges of the numbers of [weights]: relative weights within 1e-6..1e6 of each other keep every
# sum over a billion samples (and its inverse) a finite float; the clip is on weights of mean 1.
WEIGHT_RANGE = 1e6
_RANGES = {
    "high_fraction": (0.0, 1.0),
    "high_weight": (1 / WEIGHT_RANGE, WEIGHT_RANGE),
    "low_weight": (1 / WEIGHT_RANGE, WEIGHT_RANGE),
    "high_min_illustration": (0.0, 1.0),
    "high_max_upscale": (1.0, WEIGHT_RANGE),
    "tag_threshold": (0.0, 1.0),
    "tag_power": (0.0, 16.0),
    "tag_cap": (1.0, WEIGHT_RANGE),
    "min_weight": (0.0, 1.0),
    "max_weight": (0.0, WEIGHT_RANGE),
    "training_samples": (1, 10**15),
}
# Halvings or doublings that take any positive float to any other: the solver's brackets stop here.
BRACKET_STEPS = 2200


class WeightError(ValueError):
    """A weight policy that cannot be met by these samples; the message says which part and why."""


@dataclass(frozen=True)
class WeightConfig:
    """``[weights]`` in build.toml; ``[weights.shares]`` maps source name -> target share of draws."""

    high_fraction: float = 0.125  # top share by quality score that forms the high-frequency tier
    high_weight: float = 4.0  # tier weights: relative, before the source factor
    low_weight: float = 1.0
    # The high tier repeats a sample 4x: only on strong evidence. A sample reaches it only when it is
    # confidently drawn art and holds detail at its own size; a missing measure does not block.
    high_min_illustration: float = 0.8  # P(drawn illustration) (scan column ``illustration``)
    high_max_upscale: float = 1.5  # estimated upscale factor (scan column ``upscale``): soft images stay low
    tier_scope: str = "source"  # quality quantiles within each "source", or over "global"
    shares: dict[str, float] = field(default_factory=dict)  # empty: every source keeps its natural share
    tag_balance: bool = False  # repeat-factor sampling over rare character/artist tags
    tag_categories: tuple[str, ...] = ("character", "artist")
    tag_threshold: float = 0.001  # tags in fewer than this fraction of samples are up-weighted
    tag_power: float = 0.5  # factor = (threshold / fraction) ** power (0.5: LVIS repeat-factor sampling)
    tag_cap: float = 4.0  # the tag factor never exceeds this
    min_weight: float = 0.0  # clip on the final weight (mean 1 over the build); 0 = no lower clip
    max_weight: float = 0.0  # 0 = no upper clip
    training_samples: int = 1_000_000  # draws of one training run, for the expected-draws summary

    def check(self) -> None:
        """Raise ValueError naming the key for any value that cannot be used: every number finite and
        in a range whose sums over a billion samples still fit a float (no inf, no NaN, no hang)."""
        if not 0 <= self.high_fraction <= 1:
            raise ValueError(f"weights.high_fraction must be in [0, 1], got {self.high_fraction}")
        for key in ("high_weight", "low_weight"):
            if getattr(self, key) <= 0:
                raise ValueError(f"weights.{key} must be > 0, got {getattr(self, key)}")
        if self.high_max_upscale < 1:
            raise ValueError(f"weights.high_max_upscale must be >= 1, got {self.high_max_upscale}")
        if self.tier_scope not in ("source", "global"):
            raise ValueError(f"weights.tier_scope must be 'source' or 'global', got {self.tier_scope!r}")
        if not isinstance(self.shares, Mapping):
            raise ValueError(f"weights.shares must be a table of source = share, got {self.shares!r}")
        for name, share in self.shares.items():
            if isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share):
                raise ValueError(f"weights.shares.{name} must be a number, got {share!r}")
            if share < 0:
                raise ValueError(
                    f"weights.shares.{name} is negative ({share}); shares are fractions of draws"
                )
            if share == 0:
                raise ValueError(f"weights.shares.{name} is 0; leave the source out of the build instead")
        total = sum(self.shares.values())
        if self.shares and abs(total - 1.0) > SHARE_TOLERANCE:
            listed = ", ".join(f"{k}={v:g}" for k, v in sorted(self.shares.items()))
            raise ValueError(f"weights.shares sum to {total:.6g} ({listed}); they must sum to 1")
        if not isinstance(self.tag_balance, bool):
            raise ValueError(f"weights.tag_balance must be true or false, got {self.tag_balance!r}")
        cats = self.tag_categories
        if (
            isinstance(cats, str)
            or not all(isinstance(c, str) and c in TAG_CATEGORIES for c in cats)
            or not cats
        ):
            raise ValueError(
                f"weights.tag_categories must be a non-empty list of {list(TAG_CATEGORIES)}, got {cats!r}"
            )
        if not 0 < self.tag_threshold <= 1 or self.tag_power <= 0 or self.tag_cap < 1:
            raise ValueError(
                f"weights: need 0 < tag_threshold <= 1, tag_power > 0, tag_cap >= 1; got "
                f"{self.tag_threshold}, {self.tag_power}, {self.tag_cap}"
            )
        if self.min_weight < 0 or self.max_weight < 0:
            raise ValueError(
                f"weights.min_weight / max_weight must be >= 0, got {self.min_weight} / {self.max_weight}"
            )
        # Weights have mean 1, so a clip that excludes 1 can never be met.
        if self.min_weight > 1 or (self.max_weight and self.max_weight < 1):
            raise ValueError(
                f"weights: the clip [{self.min_weight}, {self.max_weight or 'inf'}] must contain 1 (weights have mean 1)"
            )
        if (
            isinstance(self.training_samples, bool)
            or not isinstance(self.training_samples, int)
            or self.training_samples < 1
        ):
            raise ValueError(
                f"weights.training_samples must be a positive integer, got {self.training_samples!r}"
            )
        for key, (lo, hi) in _RANGES.items():
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not lo <= value <= hi
            ):
                raise ValueError(f"weights.{key} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")


def check_sources(cfg: WeightConfig, sources: Sequence[str]) -> None:
    """Before anything runs: every share names a source of the build.

    A source without a share is fine as long as it keeps no sample; ``compute_weights`` refuses
    one that does (only the scan can tell).
    """
    if not cfg.shares:
        return
    unknown = sorted(set(cfg.shares) - set(sources))
    if unknown:
        raise WeightError(
            f"weights.shares names {', '.join(map(repr, unknown))}, not a source of this build "
            f"(sources: {', '.join(sources)})"
        )


@dataclass(frozen=True)
class Weighted:
    """One entry per sample. ``weight = clip(tier_weight * tag_factor * source_factor)``."""

    quality: np.ndarray  # float64 in [0, 1]: quantile of the quality score in its scope; NaN = unscored
    tier: np.ndarray  # object array of "high" / "low"
    tier_weight: np.ndarray  # float64: the configured weight of the tier
    tag_factor: np.ndarray  # float64 >= 1
    source_factor: np.ndarray  # float64: one value per source, solved for the target shares
    weight: np.ndarray  # float64, mean 1

    def factors(self) -> dict[str, np.ndarray]:
        return {
            "tier_weight": self.tier_weight,
            "tag_factor": self.tag_factor,
            "source_factor": self.source_factor,
        }


def _group_codes(values: np.ndarray) -> np.ndarray:
    """One integer per distinct value, in the values' sorted order (so group order is unchanged)."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    encoded = _as_strings(values).dictionary_encode(null_encoding="encode")
    order = np.argsort(np.asarray(encoded.dictionary.to_pylist(), dtype=object))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[encoded.indices.to_numpy()]


def percentile_within(groups: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each value within its group, scaled to [0, 1]; NaN values stay NaN; ties broken by key."""
    out = np.full(len(values), np.nan)
    for group in np.unique(groups):
        idx = np.flatnonzero((groups == group) & ~np.isnan(values))
        if len(idx) == 0:
            continue
        order = idx[np.lexsort((keys[idx], values[idx]))]
        out[order] = np.arange(len(order)) / max(len(order) - 1, 1)
    return out


def quality_tiers(
    groups: np.ndarray, quality: np.ndarray, high_fraction: float, eligible: np.ndarray | None = None
) -> np.ndarray:
    """The top ``round(high_fraction * scored)`` samples of each group by quantile are HIGH; unscored are LOW.

    ``eligible`` (bool per sample, default all): a top sample that is not eligible stays LOW and its
    place is not handed down, so the tier shrinks rather than admit a doubtful sample.
    """
    tier = np.full(len(quality), LOW, dtype=object)
    for group in np.unique(groups):
        idx = np.flatnonzero((groups == group) & ~np.isnan(quality))
        n_high = int(round(high_fraction * len(idx)))
        if n_high:
            tier[idx[np.argsort(quality[idx], kind="stable")[len(idx) - n_high :]]] = HIGH
    if eligible is not None:
        tier[~np.asarray(eligible, bool)] = LOW
    return tier


def high_tier_eligible(cfg: WeightConfig, illustration: np.ndarray, upscale: np.ndarray) -> np.ndarray:
    """Per sample, whether the evidence allows the high tier (NaN = not measured: does not block)."""
    illustration = np.asarray(illustration, np.float64)
    upscale = np.asarray(upscale, np.float64)
    with np.errstate(invalid="ignore"):
        return ~(illustration < cfg.high_min_illustration) & ~(upscale > cfg.high_max_upscale)


def tag_factors(
    tags: Sequence[Sequence[str] | None], threshold: float, power: float, cap: float
) -> np.ndarray:
    """Repeat-factor sampling (Gupta et al., LVIS 2019): a tag in a fraction f of samples has factor
    ``max(1, (threshold / f) ** power)``; a sample takes the largest factor of its tags, capped."""
    n = len(tags)
    out = np.ones(n)
    if isinstance(tags, pa.Array | pa.ChunkedArray):
        return _tag_factors_arrow(pa.chunked_array(tags).combine_chunks(), threshold, power, cap)
    unique = [set(t or ()) for t in tags]  # a tag listed twice on one sample counts once
    owner = np.repeat(np.arange(n), [len(t) for t in unique])
    flat = np.asarray([t for ts in unique for t in ts], dtype=object)
    if len(flat) == 0:
        return out
    _, inverse, counts = np.unique(flat.astype(str), return_inverse=True, return_counts=True)
    factor = np.maximum(1.0, (threshold / (counts / n)) ** power)
    np.maximum.at(out, owner, factor[inverse])
    return np.minimum(out, cap)


def _tag_factors_arrow(tags: pa.ListArray, threshold: float, power: float, cap: float) -> np.ndarray:
    """``tag_factors`` on an Arrow list column: integer codes, no Python object per tag."""
    n = len(tags)
    out = np.ones(n)
    owner = pc.list_parent_indices(tags).to_numpy().astype(np.int64)
    if len(owner) == 0:
        return out
    code = pc.list_flatten(tags).dictionary_encode(null_encoding="encode").indices.to_numpy().astype(np.int64)
    pairs = np.unique(owner * (int(code.max()) + 1) + code)  # a tag listed twice on one sample counts once
    owner, code = pairs // (int(code.max()) + 1), pairs % (int(code.max()) + 1)
    counts = np.bincount(code)
    factor = np.maximum(1.0, (threshold / (counts / n)) ** power)
    np.maximum.at(out, owner, factor[code])
    return np.minimum(out, cap)


def _clip(values: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None) -> np.ndarray:
    return np.clip(values, lo, hi if hi > 0 else np.inf, out=out)


def solve_scale(u: np.ndarray, target: float, lo: float, hi: float) -> float:
    """The factor c with ``sum(clip(c * u, lo, hi)) == target`` (hi = 0: no upper clip); u > 0.

    The sum is continuous and nondecreasing in c, so bracket then bisect, then solve the linear
    piece on the unclipped samples exactly.
    """
    n = len(u)
    top = n * hi if hi > 0 else np.inf
    if not n * lo <= target <= top:
        raise WeightError(
            f"needs a total weight of {target:.6g} from {n} samples, but the clip allows [{n * lo:.6g}, {top:.6g}]"
        )

    def total(c: float) -> float:
        return float(_clip(c * u, lo, hi).sum())

    if n == 0:
        return 1.0
    with np.errstate(over="ignore"):
        mass = float(u.sum())
    if not np.all(np.isfinite(u)) or np.any(u <= 0) or not 0 < mass < np.inf:
        raise WeightError(f"the relative weights of {n} samples must be finite and > 0 with a finite sum")
    c = target / mass
    if not 0 < c < np.inf:
        raise WeightError(
            f"a total weight of {target:.6g} from a raw total of {mass:.6g} has no finite scale"
        )
    low_c, high_c = c, c
    # Bounded: the sum is monotone in c, so BRACKET_STEPS halvings / doublings reach any target that
    # fits; one that does not (inf, 0) ends in a WeightError, never a loop that does not end.
    for _ in range(BRACKET_STEPS):
        if total(low_c) <= target:
            break
        low_c /= 2
    for _ in range(BRACKET_STEPS):
        if total(high_c) >= target:
            break
        high_c *= 2
    if not (total(low_c) <= target <= total(high_c)) or not (0 < low_c <= high_c < np.inf):
        raise WeightError(f"no scale of the weights gives a total of {target:.6g} (the floats overflow)")
    for _ in range(200):
        if high_c - low_c <= 1e-15 * high_c:
            break
        mid = 0.5 * (low_c + high_c)
        low_c, high_c = (mid, high_c) if total(mid) < target else (low_c, mid)
    c = 0.5 * (low_c + high_c)
    raw = c * u
    free = (raw > lo) & ((raw < hi) if hi > 0 else True)
    if free.any():
        clipped = _clip(raw[~free], lo, hi).sum()
        exact = (target - clipped) / float(u[free].sum())
        if np.array_equal(free, (exact * u > lo) & ((exact * u < hi) if hi > 0 else True)):
            c = exact
    return float(c)


def compute_weights(
    cfg: WeightConfig,
    *,
    sources: np.ndarray,
    keys: np.ndarray,
    quality_scores: np.ndarray,
    tags: Sequence[Sequence[str] | None] | None = None,
    eligible: np.ndarray | None = None,
) -> Weighted:
    """Weights of the kept samples.

    ``quality_scores``: float per sample, NaN where unknown (the curation quality score, or the
    Danbooru score); only its order within ``cfg.tier_scope`` matters. ``tags``: per sample, the
    tags of ``cfg.tag_categories`` (needed only with ``tag_balance``). ``eligible``: which samples may
    enter the high tier (``high_tier_eligible``); default all.
    """
    n = len(keys)
    if n == 0 and not cfg.shares:  # every input was rejected: an empty build, not an error
        empty = np.zeros(0)
        return Weighted(empty, np.zeros(0, dtype=object), empty, empty, empty, empty)
    sources = np.asarray(sources, dtype=object)
    keys = np.asarray(keys)  # strings, or int ranks that sort like them (pipelines.columnar.ranks)
    # integer codes per scope: the per-group loops below compare ints, not strings
    scope = _group_codes(sources) if cfg.tier_scope == "source" else np.zeros(n, np.int64)
    quality = percentile_within(scope, np.asarray(quality_scores, np.float64), keys)
    tier = quality_tiers(scope, quality, cfg.high_fraction, eligible)
    tier_weight = np.where(tier == HIGH, cfg.high_weight, cfg.low_weight).astype(np.float64)
    if cfg.tag_balance:
        if tags is None:
            raise ValueError("tag_balance needs the tags of each sample")
        tag_factor = tag_factors(tags, cfg.tag_threshold, cfg.tag_power, cfg.tag_cap)
    else:
        tag_factor = np.ones(n)
    u = tier_weight * tag_factor

    present = sorted(set(sources.tolist()))
    if cfg.shares:
        empty = sorted(set(cfg.shares) - set(present))
        if empty:
            raise WeightError(
                f"weights.shares gives {', '.join(f'{s}={cfg.shares[s]:g}' for s in empty)} but "
                f"{'that source has' if len(empty) == 1 else 'those sources have'} no kept samples"
            )
        unshared = sorted(set(present) - set(cfg.shares))
        if unshared:
            raise WeightError(
                f"source(s) {', '.join(unshared)} have samples but no target share in [weights.shares]"
            )
        groups = {s: cfg.shares[s] for s in present}
    else:
        groups = {None: 1.0}
    source_factor = np.zeros(n)
    for name, share in groups.items():
        # a slice (a view of u, no copy) for the whole build: at 10M samples copies are 80 MB each
        idx = slice(None) if name is None else np.flatnonzero(sources == name)
        try:
            source_factor[idx] = solve_scale(u[idx], share * n, cfg.min_weight, cfg.max_weight)
        except WeightError as exc:
            what = (
                "the build"
                if name is None
                else f"source {name!r} (share {share:g}, {len(idx)} of {n} samples)"
            )
            raise WeightError(f"{what} cannot meet its share within the weight clip: {exc}") from None
    # (tier_weight * tag_factor) * source_factor, the same floats, computed in u's own memory
    weight = _clip(np.multiply(u, source_factor, out=u), cfg.min_weight, cfg.max_weight, out=u)
    return Weighted(quality, tier, tier_weight, tag_factor, source_factor, weight)


# ---------------------------------------------------------------- summaries


def shares(weight: np.ndarray, labels: Sequence[object]) -> dict[str, float]:
    """Share of the total weight (= expected share of draws) per label."""
    weight = np.asarray(weight, np.float64)
    if len(weight) == 0:
        return {}
    encoded = _as_strings(labels).dictionary_encode()
    code = encoded.indices.to_numpy()
    total = float(np.sum(weight))
    names = encoded.dictionary.to_pylist()
    return {  # np.sum per label (pairwise summation), as before: the same floats to the last bit
        name: float(np.sum(weight[code == i]) / total) if total > 0 else 0.0
        for i, name in sorted(enumerate(names), key=lambda x: x[1])
    }


def _as_strings(values: Sequence[object]) -> pa.Array:
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    try:
        return pa.array(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([str(x) for x in arr], pa.string())


def effective_sample_size(weight: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²``: n when all weights are equal."""
    sq = float(np.sum(np.square(weight)))
    return float(np.sum(weight)) ** 2 / sq if sq > 0 else 0.0


def weight_summary(
    weight: np.ndarray,
    *,
    sources: Sequence[str],
    tiers: Sequence[str],
    buckets: Sequence[str],
    training_samples: int,
) -> dict[str, object]:
    """What build.json states: intended shares, effective sample size, expected draws per sample."""
    weight = np.asarray(weight, np.float64)
    n = len(weight)
    if n == 0:
        return {"samples": 0}
    expected = training_samples * weight / weight.sum()
    tiers = np.asarray(tiers, dtype=object)
    return {
        "samples": n,
        "effective_sample_size": round(effective_sample_size(weight), 3),
        "intended_share": {
            "source": shares(weight, sources),
            "tier": shares(weight, tiers),
            "bucket": shares(weight, buckets),
        },
        "weight": {
            "min": float(weight.min()),
            "median": float(np.median(weight)),
            "max": float(weight.max()),
        },
        "expected_draws": {
            "training_samples": training_samples,
            "min": float(expected.min()),
            "median": float(np.median(expected)),
            "max": float(expected.max()),
            "mean_by_tier": {t: float(expected[tiers == t].mean()) for t in sorted(set(tiers.tolist()))},
            # Draws are independent, so a sample's count is ~Poisson(expected): P(seen) = 1 - e^-expected.
            "share_of_samples_seen": float(np.mean(-np.expm1(-expected))),
        },
    }
