"""Driver memory and time of the build's driver-side phases on N synthetic Danbooru-shaped scan rows.

The rows look like a 2023 Danbooru dump after the scan: ~28 general tags drawn from a Zipf
vocabulary, an artist, characters, copyrights and meta tags, scores and sizes with realistic spread,
5 % rejected by the scan, and 1 % near (1..3 bits) plus 0.2 % exact (same file) duplicates planted.
They are written as the scan would write them (parts of ``scan_unit`` rows) into a scratch OUT, and
the REAL phase code runs on them, each phase in a fresh child process whose peak RSS (VmHWM after the
phase, the set-up excluded by resetting the high-water mark) is the phase's own:

* ``plan``: dedup, bucket fit, the weights' feasibility check, shard plan, plan.parquet + early
  rejects (``build.plan``; contract 2: no weight in the plan);
* ``dispatch``: every shard's rows as the materialize loop hands them to the actors (``PlanReader``);
* ``finalize``: manifest, rejects, shards.json, weight version v1, build.json (``build.finalize``),
  with shard states as materialize leaves them (a few late rejects per shard);
* ``weights``: a second weight version solved from the manifest's columns alone
  (``pipelines.tools.reweight.reweight``, as ``linepairs reweight OUT --name bench``);
* ``audit``: ``linepairs audit`` (shard files are sparse files of the recorded size);
* ``loader``: the loader's start-up (``sharding.loader.load_population``);
* ``append``: ``build --append`` of 100,000 new records (a tenth of a smaller build; 1 % near and
  0.2 % exact copies of old samples) onto the finished build: the increment's plan (dedup against
  the base's hashes, every weight version checked over the union), shard states as materialize
  leaves them, and its finalize (tables, every version re-solved, build.json). Its enumeration and
  scan are set up beforehand, as the scan parts of the build are.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIZES = (100_000, 1_000_000)
FULL_SIZES = (*SIZES, 10_000_000)
PHASES = ("plan", "dispatch", "finalize", "weights", "audit", "loader", "append")
REJECTED, NEAR, EXACT = 0.05, 0.01, 0.002
# Danbooru-like tag counts: (category, mean tags per post, vocabulary size)
TAGS = (("general", 28, 200_000), ("artist", 1.05, 300_000), ("character", 1.4, 150_000),
        ("copyright", 1.3, 50_000), ("meta", 1.6, 2_000))  # fmt: skip


def _strings(values: np.ndarray, prefix: str) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")


@functools.cache
def _vocabulary(prefix: str, size: int) -> pa.Array:
    return pa.array([f"{prefix}_{i}" for i in range(size)], pa.string())


def _tag_lists(rng: np.random.Generator, n: int, mean: float, vocab: int, prefix: str) -> pa.Array:
    counts = rng.poisson(mean, n)
    ids = np.minimum(rng.zipf(1.3, int(counts.sum())) - 1, vocab - 1)
    # a tag appears once per post: drop repeats (sorted by id within a post, as often in dumps)
    pairs = np.unique(np.repeat(np.arange(n, dtype=np.int64), counts) * vocab + ids)
    owner, ids = pairs // vocab, pairs % vocab
    names = _vocabulary(prefix, vocab)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), names.take(pa.array(ids)))


def synth_hashes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(phash int64, file id) per row: near copies within 3 bits of an earlier row, exact copies share both."""
    rng = np.random.default_rng(seed)
    phash = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    file_id = np.arange(n, dtype=np.int64)
    copies = (
        rng.choice(np.arange(1, n), int(n * (NEAR + EXACT)), replace=False) if n > 1 else np.zeros(0, int)
    )
    originals = (rng.random(len(copies)) * copies).astype(np.int64)
    exact = np.zeros(len(copies), bool)
    exact[: int(n * EXACT)] = True
    flips = np.zeros(len(copies), np.uint64)
    for _ in range(3):
        flips |= np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
    u = phash.view(np.uint64)
    u[copies] = np.where(exact, u[originals], u[originals] ^ flips)
    file_id[copies[exact]] = file_id[originals[exact]]
    return phash, file_id


def synth_part(first: int, count: int, phash: np.ndarray, file_id: np.ndarray, seed: int) -> pa.Table:
    """Scan rows ``first .. first + count`` (SCAN_SCHEMA)."""
    from curation.metrics import METRIC_COLUMNS
    from sharding.schema import SCAN_SCHEMA

    rng = np.random.default_rng([seed, first])
    seq = np.arange(first, first + count)
    post = seq + 1_000_000
    rejected = rng.random(count) < REJECTED
    width = rng.choice([850, 1000, 1200, 1447, 2048, 2894, 4093], count) + rng.integers(0, 64, count)
    height = (width * np.exp(rng.normal(0.25, 0.35, count))).astype(np.int64)
    cols: dict[str, Any] = {
        "seq": pa.array(seq),
        "key": _strings(post, "danbooru_"),
        "source": pa.array(np.full(count, "danbooru")),
        "source_id": _strings(post, ""),
        "location": _strings(post, "/data/danbooru2023/original/").cast(pa.string()),
        "post_id": pa.array(post),
        "md5": _strings(file_id[seq] * 7919, "md5"),
        "ext": pa.array(np.full(count, "jpg")),
        "width": pa.array(width),
        "height": pa.array(height),
        "rating": pa.array(rng.choice(["g", "s", "q", "e"], count)),
        "score": pa.array(np.round(rng.lognormal(2.5, 1.2, count))),
        "fav_count": pa.array(rng.poisson(20, count)),
        "rating_era": pa.array(np.full(count, "new")),
        "status": pa.array(np.where(rejected, "rejected", "kept")),
        "stage": pa.array(np.where(rejected, "metadata", None), pa.string()),
        "reason": pa.array(np.where(rejected, "low_score", None), pa.string()),
        "detail": pa.array(np.where(rejected, "score 3 under the source's min_score_percentile", None), pa.string()),
        "file_bytes": pa.array(rng.integers(200_000, 3_000_000, count)),
        "sha256": pc.utf8_lpad(_strings(file_id[seq], ""), 64, "f"),
        "phash": pa.array(phash[seq]),
        "quality_score": pa.array(rng.random(count)),
        **{c: pa.array(rng.random(count) * 10) for c in METRIC_COLUMNS},
    }  # fmt: skip
    for cat, mean, vocab in TAGS:
        cols[f"tags_{cat}"] = _tag_lists(rng, count, mean, vocab, cat)
    table = pa.table(cols)
    for field in SCAN_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(count, field.type))
    return table.select(SCAN_SCHEMA.names).cast(SCAN_SCHEMA)


APPEND_NEW = 100_000  # new records of the append phase (a tenth of a smaller build)


def append_size(n: int) -> int:
    return max(1, min(APPEND_NEW, n // 10))


def prepare_append(out: str, n: int, new: int, seed: int = 0) -> None:
    """Increment #1 of the finished build in ``out`` started as ``build --append`` starts it (the
    snapshot, its request), with ``new`` synthetic inputs enumerated and scanned into the parts after
    the build's: a hundredth of them near copies of old samples and a five-hundredth exact ones."""
    from sharding.integrity import committed
    from sharding.layout import Layout

    from ..build.base import Increment, first_free_chunk, take_snapshot
    from ..build.enumerate import RECORDS_PART

    layout = Layout(out)
    record, _ = committed(layout)
    inc = Increment(layout, 1)
    take_snapshot(layout, inc)
    first_chunk, first_seq = first_free_chunk(layout), record["counts"]["inputs"]
    old_phash, old_file = synth_hashes(n, seed)
    rng = np.random.default_rng([seed, 1])
    phash = np.concatenate([old_phash, rng.integers(-(2**63), 2**63 - 1, new, dtype=np.int64)])
    file_id = np.arange(first_seq + new, dtype=np.int64)
    file_id[:n] = old_file
    copies = rng.choice(np.arange(first_seq, first_seq + new), int(new * (NEAR + EXACT)), replace=False)
    originals = rng.integers(0, n, len(copies))
    phash[copies] = phash[originals] ^ np.int64(1)  # one bit off: a near copy of an old sample
    exact = copies[: int(new * EXACT)]
    phash[exact], file_id[exact] = phash[originals[: len(exact)]], file_id[originals[: len(exact)]]
    chunk = first_chunk
    for first in range(first_seq, first_seq + new, RECORDS_PART):
        count = min(RECORDS_PART, first_seq + new - first)
        layout.write_parquet(layout.scan_part(chunk), synth_part(first, count, phash, file_id, seed))
        chunk += 1
    config = record["request"]["config"]
    meta = {"kind": "append", "reasons": [], "sources": [], "config": config, "config_changes": [],
            "first_chunk": first_chunk, "first_seq": first_seq}  # fmt: skip
    layout.write_json(inc.request, meta)
    layout.write_json(
        inc.enumerated, {"first_chunk": first_chunk, "chunks": chunk, "inputs": new, "scanned": new}
    )


def make_out(out: str, n: int, seed: int = 0) -> None:
    """A scratch OUT holding an enumerated, scanned build of ``n`` synthetic inputs."""
    from sharding.layout import Layout

    from ..build.enumerate import scan_unit
    from ..build.request import BuildRequest
    from ..config import BuildConfig

    layout = Layout(out)
    layout.ensure_root()
    unit = scan_unit(n, BuildConfig().scan.chunk_size)
    phash, file_id = synth_hashes(n, seed)
    chunks = -(-n // unit)
    for c in range(chunks):
        layout.write_parquet(
            layout.scan_part(c), synth_part(c * unit, min(unit, n - c * unit), phash, file_id, seed)
        )
    layout.write_json(
        layout.enumerated,
        {"chunks": chunks, "inputs": n, "records_parts": 0, "records_rows": 0, "unit": unit},
    )
    req = BuildRequest([], out, BuildConfig(), show_progress=False)
    layout.write_json(layout.request, req.identity())


def _reset_peak() -> bool:
    try:  # Linux: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fake_states(out: str, plan: str | None = None) -> dict[str, dict[str, Any]]:
    """Shard states as materialize leaves them; sparse shard files of the recorded size for the audit."""
    from sharding.layout import Layout

    from ..build.plan import PlanReader

    layout = Layout(out)
    reader = PlanReader(layout, plan or layout.plan)
    states = {}
    for i, (shard, (_, length)) in enumerate(sorted(reader.spans.items())):
        late = []
        if i % 3 == 0:  # a late reject every third shard, as pair quality leaves them
            row = reader.table(shard).slice(0, 1).select(["seq", "source", "source_id", "key", "location"])
            late = [{**row.to_pylist()[0], "stage": "pair", "reason": "lines_empty", "detail": "x"}]
        size = 1024 * 200 * (length - len(late)) + 1024
        path = os.path.join(out, shard)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size)
        stats = {"path": shard, "samples": length - len(late), "bytes": size, "sha256": "0" * 64}
        states[shard] = {"stats": stats, "rejects": late, "dropped": {}}
    return states


def phase(name: str, out: str) -> dict[str, float]:
    """Run one phase on ``out`` in this process; its seconds and this process's peak RSS during it."""
    from sharding.layout import Layout

    from ..build.base import Base
    from ..build.enumerate import enumerated_work
    from ..build.finalize import finalize
    from ..build.plan import plan
    from ..build.request import FRESH, BuildRequest
    from ..config import BuildConfig

    layout = Layout(out)
    req = BuildRequest([], out, BuildConfig(), show_progress=False)
    fresh, work = Base(FRESH), enumerated_work(layout)
    states = layout.read_json(layout.path("_bench_states.json")) if name == "finalize" else None
    if name in ("audit", "loader"):
        from pipelines.tools.audit import audit
        from sharding.loader import load_population
    reset = _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    if name == "plan":
        plan(req, layout, fresh, work)
    elif name == "dispatch":
        reader = plan(req, layout, fresh, work)
        for shard in sorted(reader.spans):
            reader.rows(shard)
    elif name == "finalize":
        plan(req, layout, fresh, work)
        finalize(req, layout, fresh, work, states, {"total": 1.0}, {})
    elif name == "weights":
        from ..tools.reweight import reweight

        reweight(out, name="bench")
    elif name == "audit":
        audit(out)
    elif name == "loader":
        load_population(out)
    elif name == "append":
        _append(req, layout)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # cpu_seconds: this process's own CPU time, less sensitive than wall time to a busy machine
    return {
        "peak_rss_mb": round(_peak_mb(), 1), "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
        "peak_reset": reset,
    }  # fmt: skip


def _append(req, layout) -> None:
    """Increment #1 as ``run_build`` runs an append from its plan on (``prepare_append`` set it up)."""
    from sharding.layout import BUILD_JSON

    from ..build.base import Base, Increment
    from ..build.finalize import finalize
    from ..build.plan import plan
    from ..build.request import APPEND

    inc = Increment(layout, 1)
    meta, enumerated = layout.read_json(inc.request), layout.read_json(inc.enumerated)
    base = Base(APPEND, inc, meta, layout.read_json(inc.base(BUILD_JSON)))
    plan(req, layout, base, enumerated)
    states = _fake_states(layout.out, inc.plan)
    finalize(req, layout, base, enumerated, states, {"total": 1.0}, {})


def _child(name: str, out: str) -> dict[str, Any]:
    code = "import json,sys; from pipelines.benches.scale import phase; print(json.dumps(phase(sys.argv[1], sys.argv[2])))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # one thread for the numeric libraries: the phase's own single-core cost
    cmd = [sys.executable, "-c", code, name, out]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scale bench phase {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(n: int, scratch: str) -> dict[str, Any]:
    out = os.path.join(scratch, f"out-{n}")
    t = time.perf_counter()
    make_out(out, n)
    report: dict[str, Any] = {"_synth_seconds": round(time.perf_counter() - t, 1)}
    for name in PHASES:
        if name == "finalize":
            with open(os.path.join(out, "_bench_states.json"), "w") as fh:
                json.dump(_fake_states(out), fh)
        if name == "append":
            prepare_append(out, n, append_size(n))
        print(f"bench: scale {n} {name} ...", file=sys.stderr, flush=True)
        report[name] = _child(name, out)
        if name == "finalize":
            os.remove(os.path.join(out, "_bench_states.json"))
    shutil.rmtree(out, ignore_errors=True)
    return report


def run(args) -> dict[str, Any]:
    sizes = FULL_SIZES if getattr(args, "full", False) else SIZES
    if getattr(args, "limit", 0):
        sizes = tuple(s for s in sizes if s <= args.limit) or (args.limit,)
    scratch = tempfile.mkdtemp(prefix="lp-bench-scale-")
    try:
        return {str(n): run_size(n, scratch) for n in sizes}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
