"""Bounded-memory driver phases give exactly what the in-memory code gave.

The streaming plan (pipelines/build/plan.py) and finalize (pipelines/build/finalize.py) are compared with
the plain whole-table path (``deduplicate`` + ``split_too_small`` + ``make_plan``; weights are not in the
plan, contract 2)
on synthetic Danbooru-shaped scan rows with planted duplicates, with and without spilling.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.dedup import DedupConfig
from curation.records import TAG_CATEGORIES
from curation.weighting import WeightConfig
from pipelines.benches.scale import synth_hashes, synth_part
from pipelines.build.enumerate import scan_unit
from pipelines.build.finalize import EMPTY_TABLES, build_step, write_tables
from pipelines.build.plan import PlanBase, PlanReader, PlanSettings, write_plan
from pipelines.dedup import deduplicate
from pipelines.tools.reweight import solve
from sharding.buckets import BucketRule, crop_box, fit_bucket, make_buckets
from sharding.layout import Layout
from sharding.plan import fit_and_crop, make_plan, split_too_small
from sharding.schema import MANIFEST_SCHEMA, REJECT_COLUMNS, REJECT_SCHEMA

N, UNIT = 3000, 512


def _scanned(tmp_path, n: int = N) -> tuple[Layout, int, pa.Table]:
    layout = Layout(str(tmp_path / "out"))
    phash, file_id = synth_hashes(n, seed=5)
    parts = []
    for c in range(-(-n // UNIT)):
        part = synth_part(c * UNIT, min(UNIT, n - c * UNIT), phash, file_id, seed=5)
        layout.write_parquet(layout.scan_part(c), part)
        parts.append(part)
    return layout, len(parts), pa.concat_tables(parts)


def _reference_plan(scan: pa.Table, s: PlanSettings) -> tuple[pa.Table, pa.Table]:
    """The whole-table plan and early rejects, as the build computed them before streaming."""
    kept = scan.filter(pc.equal(scan["status"], "kept"))
    kept, dup_rejects, _ = deduplicate(kept, s.dedup)
    kept, small_rejects, _ = split_too_small(kept, s.buckets)
    plan = make_plan(kept, rule=s.buckets, samples_per_shard=s.samples_per_shard, seed=s.seed)
    scan_rejects = (
        scan.filter(pc.equal(scan["status"], "rejected")).select(REJECT_COLUMNS).cast(REJECT_SCHEMA)
    )
    early = pa.concat_tables(
        [scan_rejects, pa.Table.from_pylist(dup_rejects + small_rejects, schema=REJECT_SCHEMA)]
    )
    return plan, early.sort_by("seq")


@pytest.mark.parametrize("tag_balance", [False, True])
@pytest.mark.parametrize("bin_rows", [1 << 20, 700])  # everything in memory / spilled into 4 bins
# big buckets without enlargement: the smaller synthetic sizes are too_small_for_bucket
@pytest.mark.parametrize("big", [False, True])
def test_streaming_plan_equals_whole_table_plan(tmp_path, bin_rows, tag_balance, big):
    layout, chunks, scan = _scanned(tmp_path)
    s = PlanSettings(
        DedupConfig(), WeightConfig(tag_balance=tag_balance, tag_threshold=0.01),
        BucketRule(max_area=2048 * 2048, min_side=1024, max_side=4096, max_upscale=1.0) if big else BucketRule(),
        64, 7,
    )  # fmt: skip
    checked = []
    stats = write_plan(layout, chunks, s, bin_rows=bin_rows, check_weights=checked.append)
    plan, early = _reference_plan(scan, s)
    assert stats["dropped"] > N * 0.005  # the planted duplicates were found
    assert (stats["too_small"] > N * 0.05) == big
    assert layout.read_parquet(layout.plan).equals(plan)
    assert layout.read_parquet(layout.early_rejects).equals(early)
    # the weight check saw exactly the planned samples, with what a weight version is solved from
    by_key = plan.sort_by("key")
    seen = checked[0].sort_by("key")
    assert seen["key"].equals(by_key["key"]) and seen["bucket_upscale"].equals(by_key["bucket_upscale"])
    assert solve(seen, s.weights).equals(solve(by_key, s.weights))
    if tag_balance:
        assert pc.max(solve(seen, s.weights)["tag_factor"]).as_py() > 1


@pytest.mark.parametrize("bin_rows", [1 << 20, 700])
def test_streaming_plan_onto_a_base_dedups_against_it_and_numbers_after_it(tmp_path, bin_rows):
    """An increment's plan is the build's streamed plan onto a base: the new kept samples deduplicated
    together with the base's (a base sample always keeps its place), shards numbered after the base's,
    the notes saying where the keeper is kept."""
    layout, chunks, scan = _scanned(tmp_path)
    first = 3  # parts 0..2 are the base's samples, 3.. the increment's (with copies of base samples)
    b = first * UNIT
    old = scan.slice(0, b).filter(pc.equal(scan.slice(0, b)["status"], "kept"))
    manifest = str(tmp_path / "base_manifest.parquet")
    layout.write_parquet(manifest, old.select(["key", "seq", "phash", "sha256", "width", "height"]))
    s = PlanSettings(DedupConfig(), WeightConfig(), BucketRule(), 64, 7)
    bucket = make_buckets(BucketRule())[0]
    onto = PlanBase(
        first,
        manifest,
        {bucket: 5},
        (),
        str(tmp_path / "inc_plan.parquet"),
        str(tmp_path / "inc_early.parquet"),
    )
    checked = []
    stats = write_plan(layout, chunks, s, bin_rows=bin_rows, check_weights=checked.append, onto=onto)

    # the reference: the whole-table dedup over base + new, a base sample's quality infinite
    new = scan.slice(b)
    new_kept = new.filter(pc.equal(new["status"], "kept"))
    infinite = pa.array(np.full(old.num_rows, np.inf))
    union = pa.concat_tables(
        [old.set_column(old.schema.get_field_index("quality_score"), "quality_score", infinite), new_kept]
    )
    kept, dup_rejects, _ = deduplicate(union, s.dedup)
    kept = kept.filter(pc.greater_equal(kept["seq"], b))
    old_keys = set(old["key"].to_pylist())
    dup_rejects = [r for r in dup_rejects if r["seq"] >= b]
    for r in dup_rejects:
        where = "an earlier build" if r["duplicate_of"] in old_keys else "this increment"
        r["detail"] = r["detail"].split(" (quality")[0] + f" (kept, {where})"
    kept, small_rejects, _ = split_too_small(kept, s.buckets)
    plan = make_plan(kept, rule=s.buckets, samples_per_shard=64, seed=7, first_index={bucket: 5})
    scan_rejects = new.filter(pc.equal(new["status"], "rejected")).select(REJECT_COLUMNS).cast(REJECT_SCHEMA)
    early = pa.concat_tables(
        [scan_rejects, pa.Table.from_pylist(dup_rejects + small_rejects, schema=REJECT_SCHEMA)]
    )

    notes = [r["detail"] for r in dup_rejects]
    assert sum("an earlier build" in d for d in notes) >= 5 and sum("this increment" in d for d in notes) >= 2
    assert stats["dropped"] == len(dup_rejects) and stats["planned"] == plan.num_rows
    assert layout.read_parquet(onto.plan).equals(plan)
    assert layout.read_parquet(onto.early).equals(early.sort_by("seq"))
    assert not layout.exists(layout.plan) and not layout.exists(layout.early_rejects)
    numbers = [
        int(p.split("/")[-1][:6]) for p in plan["shard"].to_pylist() if f"/{bucket[0]}x{bucket[1]}/" in p
    ]
    assert numbers and min(numbers) == 5
    assert sorted(checked[0]["key"].to_pylist()) == sorted(plan["key"].to_pylist())


def test_plan_reader_and_finalize_stream_what_the_tables_hold(tmp_path):
    layout, chunks, scan = _scanned(tmp_path)
    s = PlanSettings(DedupConfig(), WeightConfig(), BucketRule(), 50, 1)
    write_plan(layout, chunks, s, bin_rows=900)
    plan = layout.read_parquet(layout.plan)
    reader = PlanReader(layout, layout.plan)
    assert reader.num_rows == plan.num_rows and len(reader.spans) == len(set(plan["shard"].to_pylist()))
    for shard, (offset, length) in reader.spans.items():
        assert reader.rows(shard) == plan.slice(offset, length).to_pylist()
        assert {r["shard"] for r in reader.rows(shard)} == {shard}

    keys = plan["key"].to_pylist()
    late = [
        {**plan.slice(i, 1).select(REJECT_COLUMNS[:5]).to_pylist()[0], "stage": "pair", "reason": "lines_empty",
         "detail": "x", "duplicate_of": None}
        for i in (3, 400, plan.num_rows - 1)
    ]  # fmt: skip
    late.sort(key=lambda r: r["seq"])
    dropped = {keys[10]: {"canny": "speckled: x"}}
    states = {"shard-000000": {"rejects": late, "dropped": dropped, "stats": {"path": "shard-000000.tar"}}}
    out = {"manifest": layout.manifest, "rejects": layout.rejects, "history": layout.rejects_history}
    tables = write_tables(layout, build_step(layout, states), states, ["canny", "xdog"], EMPTY_TABLES, out)
    reasons = tables.reasons

    manifest = layout.read_parquet(layout.manifest)
    gone = {r["key"] for r in late}
    expected = plan.filter(pa.array([k not in gone for k in keys]))
    per_cat = [expected[f"tags_{c}"].to_pylist() for c in TAG_CATEGORIES]
    tags = [[t for c in row for t in (c or [])] for row in zip(*per_cat)]
    exts = [["xdog"] if k == keys[10] else ["canny", "xdog"] for k in expected["key"].to_pylist()]
    expected = expected.append_column("tags", pa.array(tags, pa.list_(pa.string())))
    expected = expected.append_column("extractors", pa.array(exts, pa.list_(pa.string())))
    assert manifest.equals(expected.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA))
    assert tables.samples == tables.new_rows == manifest.num_rows
    buckets = [f"{w}x{h}" for w, h in zip(manifest["bucket_w"].to_pylist(), manifest["bucket_h"].to_pylist())]
    assert tables.buckets == dict(zip(*np.unique(buckets, return_counts=True), strict=True))
    assert tables.shards == [{"path": "shard-000000.tar"}] and not layout.exists(layout.rejects_history)

    rejects = layout.read_parquet(layout.rejects)
    early = layout.read_parquet(layout.early_rejects)
    whole = pa.concat_tables([early, pa.Table.from_pylist(late, schema=REJECT_SCHEMA)]).sort_by("seq")
    assert rejects.equals(whole)
    assert sum(reasons.values()) == rejects.num_rows == tables.fresh_rejects and reasons["lines_empty"] == 3
    assert manifest.num_rows + rejects.num_rows == N


def test_fit_and_crop_is_the_per_sample_rule():
    rng = np.random.default_rng(0)
    rules = (
        BucketRule(), BucketRule(max_upscale=1.5),
        BucketRule(max_area=64 * 96, step=32, min_side=32, max_side=128, max_upscale=2.0),
    )  # fmt: skip
    for rule in rules:
        buckets = make_buckets(rule)
        w = np.r_[rng.integers(1, 6000, 5000), [b[0] * 2 for b in buckets]]
        h = np.r_[rng.integers(1, 6000, 5000), [b[1] * 2 for b in buckets]]  # exact bucket aspects too
        got, up = fit_and_crop(w, h, rule)
        for i in range(len(w)):
            fitted = fit_bucket(int(w[i]), int(h[i]), buckets, rule)
            if fitted is None:
                assert np.isnan(up[i]) and tuple(got[i]) == (0,) * 6
                continue
            b, upscale = fitted
            assert tuple(got[i]) == (*b, *crop_box(int(w[i]), int(h[i]), b)) and up[i] == upscale


def test_scan_parts_grow_with_the_input_count():
    assert scan_unit(20, 0) == 32 and scan_unit(600, 0) == 32
    assert scan_unit(100_000, 0, cores=2) == 1024 and scan_unit(10_000_000, 0, cores=16) == 4096
    assert scan_unit(10_000_000, 7) == 7  # an explicit chunk_size wins


def test_a_small_builds_scan_units_are_equal_and_a_multiple_of_the_cores():
    """615 inputs made 19 units of 32 and one of 7: on 2 cores one core scanned the last unit alone."""
    for inputs in (33, 41, 615, 1000, 2047):
        for cores in (1, 2, 3, 16):
            unit = scan_unit(inputs, 0, cores)
            assert unit <= 32 and -(-inputs // unit) >= -(-inputs // 32), (inputs, cores, unit)
    for inputs, cores, unit, units in (
        (615, 2, 31, 20),
        (41, 2, 21, 2),
        (1000, 3, 31, 33),
        (2047, 16, 32, 64),
    ):
        assert scan_unit(inputs, 0, cores) == unit and -(-inputs // unit) == units


def test_planning_and_classical_extractors_do_not_import_torch():
    code = (
        "import sys, numpy as np, pipelines.build.run, pipelines.tasks, pipelines.tools.audit, lineart;"
        "[lineart.create(n)(np.zeros((1, 32, 32, 3), np.uint8)) for n in ('canny', 'xdog')];"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_scale_bench_reports_every_phase(tmp_path):
    code = (
        "import json, sys; from pipelines.benches.scale import run_size;"
        f"print(json.dumps(run_size(2000, {str(tmp_path)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for phase in ("plan", "dispatch", "finalize", "weights", "audit", "loader", "append"):
        assert report[phase]["peak_rss_mb"] > 10 and report[phase]["seconds"] >= 0


def test_streamed_parquet_on_a_store_is_complete_or_absent():
    from pipelines.columnar import atomic_parquet, parquet_batches

    layout = Layout("memory://scale-test/out")  # fsspec's in-memory store: no rename, like S3
    table = pa.table({"a": list(range(20_000))})
    with atomic_parquet(layout, layout.path("done.parquet"), table.schema) as writer:
        writer.write_table(table, row_group_size=8192)
    assert [b.num_rows for b in parquet_batches(layout, layout.path("done.parquet"))] == [8192, 8192, 3616]
    with pytest.raises(RuntimeError), atomic_parquet(layout, layout.path("half.parquet"), table.schema) as w:
        w.write_table(table)
        raise RuntimeError("killed half-way")
    assert not layout.exists(layout.path("half.parquet"))


def test_increment_chunks_follow_every_records_and_scan_part(tmp_path):
    """A build's scan units slice its records parts (here 1 records part, 3 scan parts): an append's
    chunks, one records part and one scan part each, must not reuse a scan part number."""
    from pipelines.build.base import first_free_chunk, records_parts
    from sharding.schema import RECORD_SCHEMA, SCAN_SCHEMA

    layout = Layout(str(tmp_path / "out"))
    assert first_free_chunk(layout) == 0
    layout.write_parquet(layout.records_part(0), RECORD_SCHEMA.empty_table())
    for c in range(3):
        layout.write_parquet(layout.scan_part(c), SCAN_SCHEMA.empty_table())
    assert first_free_chunk(layout) == 3 and records_parts(layout, 3) == [0]
    layout.write_parquet(layout.records_part(3), RECORD_SCHEMA.empty_table())  # a first append's chunk
    layout.write_parquet(layout.scan_part(3), SCAN_SCHEMA.empty_table())
    assert first_free_chunk(layout) == 4 and records_parts(layout, 4) == [0, 3]


def test_sha_words_are_exact_and_the_slow_path_agrees():
    """The plan's exact-duplicate codes come from sha256 digests as 4 uint64 words (no strings held)."""
    import hashlib

    from pipelines.build.plan import _words_slow, sha_words

    digests = [hashlib.sha256(bytes([i % 7])).hexdigest() for i in range(40)]
    fast = sha_words(pa.array(digests))
    assert fast.shape == (40, 4) and fast.dtype == np.uint64
    assert np.array_equal(fast, _words_slow(digests))
    assert fast[0].tobytes() == bytes.fromhex(digests[0])  # all 256 bits, in order
    codes = np.unique(fast, axis=0, return_inverse=True)[1].reshape(-1)
    assert len(set(codes.tolist())) == 7 and all(codes[i] == codes[i % 7] for i in range(40))
    # not all hex digests (a hand-made part): the same map for the digests, others hashed apart
    mixed = sha_words(pa.array([digests[1], None, "x", digests[1].upper(), "x"]))
    assert np.array_equal(mixed[0], fast[1]) and np.array_equal(mixed[3], fast[1])
    assert np.array_equal(mixed[2], mixed[4]) and not np.array_equal(mixed[1], mixed[2])
    sliced = sha_words(pa.array(digests).slice(5, 3))  # an array with an offset
    assert np.array_equal(sliced, fast[5:8])
