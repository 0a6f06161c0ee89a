"""The shard plan: bucket per sample, then a seeded, deterministic cut into shards by bucket.

Shards are grouped by bucket only: a sample's tier is a weight fact that a reweight may change,
so it is not part of where the sample lives.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from .buckets import BucketRule, crop_box, fit_bucket, make_buckets
from .schema import PLAN_COLUMNS, PLAN_SCHEMA


def shard_path(bucket: tuple[int, int], index: int) -> str:
    return f"shards/{bucket[0]}x{bucket[1]}/{index:06d}.tar"


def shard_index(path: str) -> tuple[tuple[int, int], int]:
    """(bucket, number) of a ``shard_path``."""
    folder, name = path.split("/")[-2:]
    w, h = folder.split("x")
    return (int(w), int(h)), int(name.split(".")[0].split("-")[-1])


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
    samples_per_shard: int,
    seed: int,
    first_index: dict[tuple[int, int], int] | None = None,
) -> pa.Table:
    """``kept``: scan rows that passed every filter (any order). Returns rows sorted by shard, position.

    ``first_index``: per bucket, the first shard number to use (an append numbers its shards after
    the ones already written); default 0.
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
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        groups.setdefault((int(bw[i]), int(bh[i])), []).append(i)
    for (w, h), members in sorted(groups.items()):
        members = sorted(members, key=lambda i: keys[i])  # order independent of scan completion order
        order = _rng(seed, w, h).permutation(len(members))
        first = (first_index or {}).get((w, h), 0)
        for j, k in enumerate(order):
            i = members[k]
            shard[i] = shard_path((w, h), first + j // samples_per_shard)
            pos[i] = j % samples_per_shard

    table = kept.append_column("bucket_w", pa.array(bw))
    for name, values in (
        ("bucket_h", bh),
        ("crop_left", crops[:, 0]),
        ("crop_top", crops[:, 1]),
        ("crop_right", crops[:, 2]),
        ("crop_bottom", crops[:, 3]),
        ("bucket_upscale", upscale),
        ("shard", shard.astype(str) if n else np.array([], dtype=str)),
        ("shard_pos", pos),
    ):
        # from_pandas: NaN (no score) becomes null, which readers and equality treat sanely
        table = table.append_column(
            name, pa.array(values, type=PLAN_SCHEMA.field(name).type, from_pandas=True)
        )
    table = table.cast(PLAN_SCHEMA)
    return table.sort_by([("shard", "ascending"), ("shard_pos", "ascending")])
