"""The shard plan: bucket per sample, then a seeded, deterministic cut into shards by bucket.

Shards are grouped by bucket only: a sample's tier is a weight fact that a reweight may change,
so it is not part of where the sample lives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .buckets import BucketRule, fit_bucket, make_buckets, nearest_bucket
from .schema import PLAN_COLUMNS, PLAN_SCHEMA, REJECT_ID_COLUMNS


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


@dataclass(frozen=True)
class ShardAssignment:
    """Per sample: bucket, crop box, upscale, shard (code into ``shard_names``) and position; the sort order."""

    bucket_w: np.ndarray  # int32
    bucket_h: np.ndarray  # int32
    crops: np.ndarray  # int32, n x 4 (left, top, right, bottom)
    upscale: np.ndarray  # float64: enlargement to fill the bucket
    shard: np.ndarray  # int32 code into shard_names
    shard_names: list[str]
    pos: np.ndarray  # int32 position inside the shard
    order: np.ndarray  # int64: the samples sorted by (shard path, position), as the plan lists them


def _nearest(w: np.ndarray, h: np.ndarray, buckets: list[tuple[int, int]]) -> np.ndarray:
    """Index into ``buckets`` of ``nearest_bucket`` for many sizes at once.

    Vectorised but exact: where NumPy's log could order two buckets differently from ``math.log``
    (distances within 1e-9 of each other), the size goes through ``nearest_bucket`` itself.
    """
    b = np.asarray(buckets, np.int64)
    dist = np.abs(np.log(b[:, 0] / b[:, 1])[None, :] - np.log(w / h)[:, None])
    # min of (distance, -area, -width): buckets are few, so rank them once by (-area, -width)
    pref = np.lexsort((-b[:, 0], -b[:, 0] * b[:, 1]))
    best = pref[
        np.argmin(dist[:, pref], axis=1)
    ]  # argmin takes the first minimum: the preferred one of a tie
    two = np.partition(dist, 1, axis=1)[:, :2] if len(buckets) > 1 else np.c_[dist, dist + 1]
    index = {bucket: i for i, bucket in enumerate(buckets)}
    for k in np.flatnonzero(two[:, 1] - two[:, 0] < 1e-9).tolist():
        best[k] = index[nearest_bucket(int(w[k]), int(h[k]), buckets)]
    return best


def fit_and_crop(widths: np.ndarray, heights: np.ndarray, rule: BucketRule) -> tuple[np.ndarray, np.ndarray]:
    """``fit_bucket`` and ``crop_box`` for many sizes at once.

    Returns (rows (bw, bh, left, top, right, bottom) int64, upscale float64); a size that fits no
    bucket (too small under ``rule.max_upscale``) has bucket 0 x 0 and upscale NaN. The nearest bucket
    is vectorised (``_nearest``); the few sizes over ``max_upscale`` go through ``fit_bucket``; the crop
    uses the same IEEE divisions and round-half-even as ``crop_box``.
    """
    out = np.zeros((len(widths), 6), np.int64)
    up = np.full(len(widths), np.nan)
    if len(widths) == 0:
        return out, up
    buckets = make_buckets(rule)
    w = np.asarray(widths, np.int64)
    h = np.asarray(heights, np.int64)
    b = np.asarray(buckets, np.int64)[_nearest(w, h, buckets)]
    bw, bh = b[:, 0].copy(), b[:, 1].copy()
    up = np.maximum(bw / w, bh / h)
    if rule.max_upscale:
        for k in np.flatnonzero(up > rule.max_upscale * (1 + 1e-9)).tolist():
            fitted = fit_bucket(int(w[k]), int(h[k]), buckets, rule)
            (bw[k], bh[k]), up[k] = fitted if fitted is not None else ((0, 0), np.nan)
    ok = bw > 0
    scale = np.maximum(bw / w, bh / h)
    cw = np.where(ok, np.minimum(w, np.maximum(1, np.rint(bw / np.where(ok, scale, 1)).astype(np.int64))), 0)
    ch = np.where(ok, np.minimum(h, np.maximum(1, np.rint(bh / np.where(ok, scale, 1)).astype(np.int64))), 0)
    left, top = (w - cw) // 2, (h - ch) // 2
    out[:] = np.stack([bw, bh, left, top, left + cw, top + ch], 1)
    out[~ok] = 0
    return out, up


@dataclass(frozen=True)
class BucketFit:
    """Every sample's bucket, crop and upscale under a ``BucketRule``, ``max_upscale`` included: the one
    way the bucket rule reaches the plan (``fit_buckets`` makes it; the build's streamed plan, an
    increment's plan and ``make_plan`` all take it). Held per distinct size: ``inverse`` maps a sample
    to its size."""

    rule: BucketRule
    sizes: np.ndarray  # int64, sizes x 2: the distinct (width, height)
    per_size: np.ndarray  # int64, sizes x 6: (bucket_w, bucket_h, left, top, right, bottom)
    up_size: np.ndarray  # float64 per size; NaN where no bucket fits
    inverse: np.ndarray  # int64 per sample: its row of per_size

    @property
    def too_small(self) -> np.ndarray:
        """True where no bucket fits the size under ``rule.max_upscale`` (the one check)."""
        return np.isnan(self.up_size)[self.inverse]

    @property
    def widths(self) -> np.ndarray:
        return self.sizes[self.inverse, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.sizes[self.inverse, 1]

    @property
    def upscale(self) -> np.ndarray:
        return self.up_size[self.inverse]

    def take(self, rows: np.ndarray) -> BucketFit:
        """The fit of these samples (indices, in this order)."""
        rows = np.asarray(rows, np.int64)
        return BucketFit(self.rule, self.sizes, self.per_size, self.up_size, self.inverse[rows])

    def reject_rows(self, ids: pa.Table) -> list[dict]:
        """A ``too_small_for_bucket`` reject row per too-small sample; ``ids``: every sample's
        REJECT_ID_COLUMNS, in this fit's order. The rows are few, so they are Python dicts."""
        bad = np.flatnonzero(self.too_small)
        rows = ids.select(list(REJECT_ID_COLUMNS)).take(pa.array(bad, pa.int64())).to_pylist()
        rule, widths, heights = self.rule, self.widths, self.heights
        return [
            {**row, "stage": "plan", "reason": "too_small_for_bucket", "duplicate_of": None,
             "detail": f"{widths[i]}x{heights[i]}: even a {rule.min_side}px bucket needs more than "
                       f"x{rule.max_upscale:g} (buckets.max_upscale)"}
            for i, row in zip(bad.tolist(), rows, strict=True)
        ]  # fmt: skip


def fit_buckets(widths: np.ndarray, heights: np.ndarray, rule: BucketRule) -> BucketFit:
    """The bucket rule applied to every size once (one ``fit_and_crop`` per distinct size)."""
    w, h = np.asarray(widths, np.int64), np.asarray(heights, np.int64)
    if len(w) == 0:
        return BucketFit(
            rule, np.zeros((0, 2), np.int64), np.zeros((0, 6), np.int64), np.zeros(0), np.zeros(0, np.int64)
        )
    sizes, inverse = np.unique(np.stack([w, h], 1), axis=0, return_inverse=True)
    per_size, up_size = fit_and_crop(sizes[:, 0], sizes[:, 1], rule)
    return BucketFit(rule, sizes, per_size, up_size, inverse.reshape(-1).astype(np.int64))


def split_too_small(kept: pa.Table, rule: BucketRule) -> tuple[pa.Table, list[dict], np.ndarray]:
    """(rows that fit a bucket, a ``too_small_for_bucket`` reject row per other one, their bucket upscale):
    ``fit_buckets`` over a whole table."""
    fit = fit_buckets(kept["width"].to_numpy(), kept["height"].to_numpy(), rule)
    fits = np.flatnonzero(~fit.too_small)
    return kept.take(pa.array(fits, pa.int64())), fit.reject_rows(kept), fit.take(fits).upscale


def assign_shards(
    fit: BucketFit, key_rank: np.ndarray, *, samples_per_shard: int, seed: int,
    first_index: dict[tuple[int, int], int] | None = None,
) -> ShardAssignment:  # fmt: skip
    """The shard plan from a ``BucketFit`` of the planned samples: ``key_rank`` orders the samples as
    their keys sort (any ints that do).

    Shards are grouped by bucket only. ``first_index``: per bucket, the first shard number (appends).
    Every sample must fit a bucket (take the fit of the others out first).
    """
    n = len(fit.inverse)
    if fit.too_small.any():
        w, h = fit.sizes[fit.inverse[np.flatnonzero(fit.too_small)[0]]]
        raise ValueError(f"{w}x{h}: too small for any bucket; take it out of the fit first")
    per_size, inverse = fit.per_size, fit.inverse
    bw, bh = per_size[inverse, 0].astype(np.int32), per_size[inverse, 1].astype(np.int32)
    crops, upscale = per_size[inverse, 2:].astype(np.int32), fit.upscale

    # group = the bucket, coded by its (w, h) order so groups come out sorted like the main plan
    group = (bw.astype(np.int64) << 32) | bh.astype(np.int64)
    # members of each bucket in key order: order independent of scan completion order
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
        w, h = int(bw[members[0]]), int(bh[members[0]])
        order = _rng(seed, w, h).permutation(len(members))
        j = np.arange(len(members))
        first = (first_index or {}).get((w, h), 0)
        pos[members[order]] = j % samples_per_shard
        shard[members[order]] = len(shard_names) + j // samples_per_shard
        count = (len(members) - 1) // samples_per_shard + 1
        shard_names += [shard_path((w, h), first + k) for k in range(count)]
    name_rank = np.empty(len(shard_names), np.int64)
    name_rank[np.argsort(np.asarray(shard_names, dtype=object), kind="stable")] = np.arange(len(shard_names))
    sort_key = name_rank[shard] * max(samples_per_shard, 1) + pos if n else np.zeros(0, np.int64)
    return ShardAssignment(
        bw, bh, crops, upscale, shard, shard_names, pos, np.argsort(sort_key, kind="stable")
    )


def plan_columns(a: ShardAssignment) -> dict[str, pa.Array]:
    """The PLAN_EXTRA columns of every sample (in the samples' order, not sorted)."""
    names = pa.array(a.shard_names, pa.string())
    values = {
        "bucket_w": a.bucket_w, "bucket_h": a.bucket_h,
        "crop_left": a.crops[:, 0], "crop_top": a.crops[:, 1], "crop_right": a.crops[:, 2], "crop_bottom": a.crops[:, 3],
        "bucket_upscale": np.asarray(a.upscale, np.float64),
    }  # fmt: skip
    out = {k: pa.array(v, type=PLAN_SCHEMA.field(k).type) for k, v in values.items()}
    # dictionary-encoded (a few thousand names for millions of rows); casting to PLAN_SCHEMA decodes it
    out["shard"] = pa.DictionaryArray.from_arrays(pa.array(a.shard, pa.int32()), names)
    out["shard_pos"] = pa.array(a.pos, pa.int32())
    return out


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
    the ones already written); default 0. The build plans through ``fit_buckets``, ``assign_shards``
    and ``plan_columns`` directly, streaming the rows.
    """
    kept = kept.select(PLAN_COLUMNS)
    fit = fit_buckets(kept["width"].to_numpy(), kept["height"].to_numpy(), rule)
    a = assign_shards(
        fit, _key_rank(kept["key"]), samples_per_shard=samples_per_shard, seed=seed, first_index=first_index
    )
    table = kept
    for name, column in plan_columns(a).items():
        table = table.append_column(name, column)
    return table.cast(PLAN_SCHEMA).take(pa.array(a.order, pa.int64()))


def _key_rank(keys: pa.ChunkedArray) -> np.ndarray:
    order = pc.sort_indices(keys).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank
