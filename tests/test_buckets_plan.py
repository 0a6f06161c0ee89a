"""The bucket rule, bucket assignment, crop boxes and the seeded shard plan."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from sharding.buckets import BucketRule, crop_box, fit_bucket, make_buckets, nearest_bucket
from sharding.plan import assign_shards, fit_buckets, make_plan
from sharding.schema import SCAN_SCHEMA


@pytest.mark.parametrize("rule", [BucketRule(), BucketRule(max_area=1024 * 1024, step=64, min_side=512, max_side=2048),
                                  BucketRule(max_area=64 * 96, step=32, min_side=32, max_side=128)])  # fmt: skip
def test_bucket_rule(rule):
    buckets = make_buckets(rule)
    assert len(set(buckets)) == len(buckets) > 3
    for w, h in buckets:
        assert w % rule.step == 0 and h % rule.step == 0
        assert rule.min_side <= min(w, h) and max(w, h) <= rule.max_side
        assert w * h <= rule.max_area
        assert (h, w) in buckets  # both orientations

    # every non-square bucket is as large as the rule allows given one of its sides
    def largest_other(side):
        return min(rule.max_side, rule.max_area // side // rule.step * rule.step)

    for w, h in buckets:
        assert w == h or largest_other(w) == h or largest_other(h) == w


def test_default_rule_matches_novelai_examples():
    buckets = make_buckets(BucketRule())
    for b in [(512, 768), (768, 512), (256, 1024), (1024, 256), (576, 576), (448, 832), (640, 576)]:
        assert b in buckets


def test_nearest_bucket_is_nearest_in_log_aspect():
    buckets = make_buckets(BucketRule())
    for w, h in [(1000, 1500), (1920, 1080), (500, 500), (300, 1200), (1037, 988)]:
        best = nearest_bucket(w, h, buckets)
        err = abs(math.log(best[0] / best[1]) - math.log(w / h))
        assert all(err <= abs(math.log(b[0] / b[1]) - math.log(w / h)) + 1e-12 for b in buckets)


def test_crop_box_keeps_bucket_aspect_and_is_centered():
    for (w, h), bucket in [
        ((1920, 1080), (832, 448)),
        ((1000, 1500), (512, 768)),
        ((300, 1200), (256, 1024)),
    ]:
        left, top, right, bottom = crop_box(w, h, bucket)
        assert 0 <= left and right <= w and 0 <= top and bottom <= h
        assert abs((right - left) / (bottom - top) - bucket[0] / bucket[1]) < 0.01
        assert abs(left - (w - right)) <= 1 and abs(top - (h - bottom)) <= 1
        assert right - left == w or bottom - top == h  # crops only the overhanging side


def _kept(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = [
        {"seq": i, "key": f"s_{i}", "source": "s", "source_id": str(i), "location": f"/x/{i}.jpg",
         "width": int(rng.integers(300, 2000)), "height": int(rng.integers(300, 2000)), "score": float(i % 7)}
        for i in range(n)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SCAN_SCHEMA)


def test_plan_is_deterministic_and_groups_by_bucket():
    kept = _kept(300)
    args = dict(rule=BucketRule(), samples_per_shard=16, seed=3)
    plan = make_plan(kept, **args)
    shuffled = kept.take(np.random.default_rng(1).permutation(300))  # scan order must not matter
    again = make_plan(shuffled, **args)
    assert plan.equals(again)
    assert "weight" not in plan.column_names and "tier" not in plan.column_names  # weight versions only
    rows = plan.to_pylist()
    assert len({r["key"] for r in rows}) == 300
    for r in rows:
        assert r["shard"] == f"shards/{r['bucket_w']}x{r['bucket_h']}/{int(r['shard'][-10:-4]):06d}.tar"
    per_shard = {}
    for r in rows:
        per_shard.setdefault(r["shard"], []).append(r["shard_pos"])
    assert all(sorted(p) == list(range(len(p))) and len(p) <= 16 for p in per_shard.values())
    later = make_plan(kept, **args, first_index={(r["bucket_w"], r["bucket_h"]): 7 for r in rows})
    assert min(int(x[-10:-4]) for x in later["shard"].to_pylist()) == 7  # an append numbers after the old
    other_seed = make_plan(kept, **{**args, "seed": 4})
    assert other_seed["key"].to_pylist() != plan["key"].to_pylist()


def test_max_upscale_reaches_the_plan_through_one_fit():
    """``fit_buckets`` applies ``max_upscale`` once per size; a subset's fit is the same fit, and a
    plan refuses a fit that still holds a size no bucket takes."""
    rule = BucketRule()
    buckets = make_buckets(rule)
    widths = np.array([1000, 150, 400, 150, 210, 200])
    heights = np.array([800, 150, 279, 150, 210, 200])
    fit = fit_buckets(widths, heights, rule)
    expected = [
        fit_bucket(int(w), int(h), buckets, rule) is None for w, h in zip(widths, heights, strict=True)
    ]
    assert fit.too_small.tolist() == expected == [False, True, False, True, False, True]
    ids = pa.table({"seq": list(range(6)), "source": ["a"] * 6, "source_id": list("uvwxyz"),
                    "key": [f"a_{c}" for c in "uvwxyz"], "location": ["/p"] * 6})  # fmt: skip
    rows = fit.reject_rows(ids)
    assert [r["key"] for r in rows] == ["a_v", "a_x", "a_z"]
    assert rows[0]["detail"].startswith("150x150: even a 256px bucket needs more than x1.25")
    fits = np.flatnonzero(~fit.too_small)
    part = fit.take(fits)
    assert part.widths.tolist() == [1000, 400, 210] and not part.too_small.any()
    assert part.upscale.tolist() == fit.upscale[fits].tolist()
    a = assign_shards(part, np.arange(3), samples_per_shard=2, seed=1)
    assert (a.upscale <= rule.max_upscale * (1 + 1e-9)).all()
    with pytest.raises(ValueError, match="150x150: too small"):
        assign_shards(fit, np.arange(6), samples_per_shard=2, seed=1)
