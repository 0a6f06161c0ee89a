"""The shard plan: bucket per sample, then a seeded, deterministic cut into shards by (bucket, tier)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from .buckets import BucketRule, crop_box, fit_bucket, make_buckets
from .schema import PLAN_COLUMNS, PLAN_SCHEMA


def shard_path(bucket: tuple[int, int], tier: str, index: int) -> str:
    return f"shards/{bucket[0]}x{bucket[1]}/{tier}-{index:06d}.tar"


def _rng(seed: int, *parts: object) -> np.random.Generator:
    material = ":".join(str(p) for p in (seed, *parts)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(material).digest()[:8], "little"))


def split_too_small(kept: pa.Table, rule: BucketRule) -> tuple[pa.Table, list[dict], np.ndarray]:
    """(rows that fit a bucket, a ``too_small_for_bucket`` reject row per other one, their bucket upscale).

    Run before the weights, so the tiers can see the upscale (``pipelines.build``).
    """
    buckets = make_buckets(rule)
    widths, heights = kept["width"].to_numpy(), kept["height"].to_numpy()
    fits = [fit_bucket(int(w), int(h), buckets, rule) for w, h in zip(widths, heights)]
    ok = np.array([f is not None for f in fits], bool)
    rejects = []
    for i in np.flatnonzero(~ok):
        row = {c: kept[c][int(i)].as_py() for c in ("seq", "source", "source_id", "key", "location")}
        rejects.append({**row, "stage": "plan", "reason": "too_small_for_bucket", "duplicate_of": None,
                        "detail": f"{widths[i]}x{heights[i]}: even a {rule.min_side}px bucket needs more than "
                                  f"x{rule.max_upscale:g} (buckets.max_upscale)"})  # fmt: skip
    upscale = np.array([f[1] for f in fits if f is not None], np.float64)
    return kept.filter(pa.array(ok)), rejects, upscale


def make_plan(
    kept: pa.Table,
    *,
    rule: BucketRule,
    tier: np.ndarray,
    weight: np.ndarray,
    quality: np.ndarray,
    factors: dict[str, np.ndarray] | None = None,
    samples_per_shard: int,
    seed: int,
) -> pa.Table:
    """``kept``: scan rows that passed every filter (any order). Returns rows sorted by shard, position.

    ``factors``: the weight's factors by column name (see schema.PLAN_EXTRA); missing ones are 1.
    """
    kept = kept.select(PLAN_COLUMNS)
    buckets = make_buckets(rule)
    widths = kept["width"].to_numpy()
    heights = kept["height"].to_numpy()
    keys = np.asarray(kept["key"].to_pylist(), dtype=object)
    n = kept.num_rows
    bw, bh = np.zeros(n, np.int32), np.zeros(n, np.int32)
    crops = np.zeros((n, 4), np.int32)
    upscale = np.zeros(n, np.float64)
    for i in range(n):  # per sample, not per pixel: a few microseconds each
        fitted = fit_bucket(int(widths[i]), int(heights[i]), buckets, rule)
        if fitted is None:
            raise ValueError(f"{keys[i]}: too small for any bucket; drop it first (split_too_small)")
        b, upscale[i] = fitted
        bw[i], bh[i] = b
        crops[i] = crop_box(int(widths[i]), int(heights[i]), b)

    shard = np.empty(n, dtype=object)
    pos = np.zeros(n, np.int32)
    groups: dict[tuple[int, int, str], list[int]] = {}
    for i in range(n):
        groups.setdefault((int(bw[i]), int(bh[i]), str(tier[i])), []).append(i)
    for (w, h, t), members in sorted(groups.items()):
        members = sorted(members, key=lambda i: keys[i])  # order independent of scan completion order
        order = _rng(seed, w, h, t).permutation(len(members))
        for j, k in enumerate(order):
            i = members[k]
            shard[i] = shard_path((w, h), t, j // samples_per_shard)
            pos[i] = j % samples_per_shard

    table = kept.append_column("bucket_w", pa.array(bw))
    for name, values in (
        ("bucket_h", bh),
        ("crop_left", crops[:, 0]),
        ("crop_top", crops[:, 1]),
        ("crop_right", crops[:, 2]),
        ("crop_bottom", crops[:, 3]),
        ("bucket_upscale", upscale),
        ("quality", quality.astype(np.float64)),
        ("tier", tier.astype(str)),
        ("weight", weight.astype(np.float64)),
        *(
            (name, (factors or {}).get(name, np.ones(n)))
            for name in ("tier_weight", "tag_factor", "source_factor")
        ),
        ("shard", shard.astype(str) if n else np.array([], dtype=str)),
        ("shard_pos", pos),
    ):
        # from_pandas: NaN (no score) becomes null, which readers and equality treat sanely
        table = table.append_column(
            name, pa.array(values, type=PLAN_SCHEMA.field(name).type, from_pandas=True)
        )
    table = table.cast(PLAN_SCHEMA)
    return table.sort_by([("shard", "ascending"), ("shard_pos", "ascending")])
