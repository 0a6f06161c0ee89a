"""The shard plan: bucket per sample, then a seeded, deterministic cut into shards by (bucket, tier)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .buckets import BucketRule, make_buckets, nearest_bucket
from .schema import PLAN_COLUMNS, PLAN_SCHEMA


def shard_path(bucket: tuple[int, int], tier: str, index: int) -> str:
    return f"shards/{bucket[0]}x{bucket[1]}/{tier}-{index:06d}.tar"


def _rng(seed: int, *parts: object) -> np.random.Generator:
    material = ":".join(str(p) for p in (seed, *parts)).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(material).digest()[:8], "little"))


@dataclass(frozen=True)
class ShardAssignment:
    """Per sample: bucket, crop box, shard (code into ``shard_names``) and position; plus the sort order."""

    bucket_w: np.ndarray  # int32
    bucket_h: np.ndarray  # int32
    crops: np.ndarray  # int32, n x 4 (left, top, right, bottom)
    shard: np.ndarray  # int32 code into shard_names
    shard_names: list[str]
    pos: np.ndarray  # int32 position inside the shard
    order: np.ndarray  # int64: the samples sorted by (shard path, position), as the plan lists them


def bucket_and_crop(widths: np.ndarray, heights: np.ndarray, buckets: list[tuple[int, int]]) -> np.ndarray:
    """``nearest_bucket`` and ``crop_box`` for many sizes at once: rows (bw, bh, left, top, right, bottom).

    Vectorised but exact: where NumPy's log could order two buckets differently from ``math.log``
    (distances within 1e-9 of each other), the size goes through ``nearest_bucket`` itself; the crop
    uses the same IEEE divisions and round-half-even as ``crop_box``.
    """
    out = np.zeros((len(widths), 6), np.int32)
    if len(widths) == 0:
        return out
    w = np.asarray(widths, np.int64)
    h = np.asarray(heights, np.int64)
    b = np.asarray(buckets, np.int64)
    dist = np.abs(np.log(b[:, 0] / b[:, 1])[None, :] - np.log(w / h)[:, None])
    # min of (distance, -area, -width): buckets are few, so rank them once by (-area, -width)
    pref = np.lexsort((-b[:, 0], -b[:, 0] * b[:, 1]))
    d = dist[:, pref]
    best = pref[np.argmin(d, axis=1)]  # argmin takes the first minimum: the preferred one of a tie
    two = np.partition(dist, 1, axis=1)[:, :2] if len(buckets) > 1 else np.c_[dist, dist + 1]
    unsure = np.flatnonzero(two[:, 1] - two[:, 0] < 1e-9)
    index = {bucket: i for i, bucket in enumerate(buckets)}
    for k in unsure.tolist():
        best[k] = index[nearest_bucket(int(w[k]), int(h[k]), buckets)]
    bw, bh = b[best, 0], b[best, 1]
    scale = np.maximum(bw / w, bh / h)
    cw = np.minimum(w, np.maximum(1, np.rint(bw / scale).astype(np.int64)))
    ch = np.minimum(h, np.maximum(1, np.rint(bh / scale).astype(np.int64)))
    left, top = (w - cw) // 2, (h - ch) // 2
    out[:] = np.stack([bw, bh, left, top, left + cw, top + ch], 1)
    return out


def assign_shards(
    widths: np.ndarray, heights: np.ndarray, key_rank: np.ndarray, tier: np.ndarray, *,
    rule: BucketRule, samples_per_shard: int, seed: int,
) -> ShardAssignment:  # fmt: skip
    """The shard plan from columns: ``key_rank`` orders the samples as their keys sort (any ints that do)."""
    n = len(widths)
    widths = np.asarray(widths, np.int64)
    heights = np.asarray(heights, np.int64)
    buckets = make_buckets(rule)
    sizes, inverse = np.unique(np.stack([widths, heights], 1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_size = bucket_and_crop(sizes[:, 0], sizes[:, 1], buckets)
    bw, bh, crops = per_size[inverse, 0], per_size[inverse, 1], per_size[inverse, 2:]

    tier_names, tier_code = np.unique(np.asarray(tier, dtype=object).astype(str), return_inverse=True)
    tier_code = tier_code.reshape(-1)
    bucket_index = {b: i for i, b in enumerate(buckets)}
    bcode = np.asarray(
        [bucket_index[b] for b in zip(per_size[:, 0].tolist(), per_size[:, 1].tolist())], np.int64
    )
    group = (bcode[inverse] if n else np.zeros(0, np.int64)) * len(tier_names) + tier_code
    # members of each (bucket, tier) group in key order: order independent of scan completion order
    by_group = np.lexsort((np.asarray(key_rank), group))
    starts = (
        np.flatnonzero(np.r_[True, group[by_group][1:] != group[by_group][:-1]]) if n else np.zeros(0, int)
    )
    ends = np.r_[starts[1:], n].astype(np.int64)
    shard = np.zeros(n, np.int32)
    pos = np.zeros(n, np.int32)
    shard_names: list[str] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        members = by_group[a:b]
        i0 = members[0]
        w, h, t = int(bw[i0]), int(bh[i0]), str(tier_names[tier_code[i0]])
        order = _rng(seed, w, h, t).permutation(len(members))
        j = np.arange(len(members))
        pos[members[order]] = j % samples_per_shard
        shard[members[order]] = len(shard_names) + j // samples_per_shard
        shard_names += [shard_path((w, h), t, k) for k in range((len(members) - 1) // samples_per_shard + 1)]
    name_rank = np.empty(len(shard_names), np.int64)
    name_rank[np.argsort(np.asarray(shard_names, dtype=object), kind="stable")] = np.arange(len(shard_names))
    sort_key = name_rank[shard] * max(samples_per_shard, 1) + pos if n else np.zeros(0, np.int64)
    return ShardAssignment(bw, bh, crops, shard, shard_names, pos, np.argsort(sort_key, kind="stable"))


def plan_columns(
    a: ShardAssignment, *, tier: np.ndarray, weight: np.ndarray, quality: np.ndarray,
    factors: dict[str, np.ndarray] | None = None,
) -> dict[str, pa.Array]:  # fmt: skip
    """The PLAN_EXTRA columns of every sample (in the samples' order, not sorted)."""
    n = len(a.pos)
    names = pa.array(a.shard_names, pa.string())
    values = {
        "bucket_w": a.bucket_w, "bucket_h": a.bucket_h,
        "crop_left": a.crops[:, 0], "crop_top": a.crops[:, 1], "crop_right": a.crops[:, 2], "crop_bottom": a.crops[:, 3],
        "quality": np.asarray(quality, np.float64),
        "tier": np.asarray(tier, dtype=object).astype(str) if n else np.array([], dtype=str),
        "weight": np.asarray(weight, np.float64),
        **{name: (factors or {}).get(name, np.ones(n)) for name in ("tier_weight", "tag_factor", "source_factor")},
    }  # fmt: skip
    # from_pandas: NaN (no score) becomes null, which readers and equality treat sanely
    out = {k: pa.array(v, type=PLAN_SCHEMA.field(k).type, from_pandas=True) for k, v in values.items()}
    out["shard"] = names.take(pa.array(a.shard)) if n else pa.array([], pa.string())
    out["shard_pos"] = pa.array(a.pos, pa.int32())
    return out


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
    The build plans through ``assign_shards`` / ``plan_columns`` directly, streaming the rows.
    """
    kept = kept.select(PLAN_COLUMNS)
    a = assign_shards(
        kept["width"].to_numpy(), kept["height"].to_numpy(), _key_rank(kept["key"]), tier,
        rule=rule, samples_per_shard=samples_per_shard, seed=seed,
    )  # fmt: skip
    table = kept
    for name, column in plan_columns(a, tier=tier, weight=weight, quality=quality, factors=factors).items():
        table = table.append_column(name, column)
    return table.cast(PLAN_SCHEMA).take(pa.array(a.order, pa.int64()))


def _key_rank(keys: pa.ChunkedArray) -> np.ndarray:
    order = pc.sort_indices(keys).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank
