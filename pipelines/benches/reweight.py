"""``linepairs reweight`` at 1M samples: wall seconds and peak memory, from a synthetic manifest.

The manifest has Danbooru-like columns (two sources, a quality score, character and artist tags
from Zipf vocabularies, buckets); the REAL ``pipelines.tools.reweight.reweight`` runs on it in a fresh
child process per policy, so its peak RSS is the reweight's own (the import baseline is reported
beside it). No shard exists in the scratch OUT: a reweight that opened one would fail.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SAMPLES = 1_000_000
POLICIES = {
    "default": {},
    "shares_tags_clip": {
        "shares": {"danbooru": 0.7, "extra": 0.3},
        "tag_balance": True,
        "max_weight": 20.0,
    },
}


def _tags(rng: np.random.Generator, n: int, vocab: int, prefix: str) -> pa.Array:
    ids = np.minimum(rng.zipf(1.3, n) - 1, vocab - 1)
    names = pc.binary_join_element_wise(prefix, pc.cast(pa.array(ids), pa.string()), "_")
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), names)


def make_build(out: str, n: int, seed: int = 0) -> None:
    """A finished-looking OUT with only what reweight reads: build.json and manifest.parquet."""
    from curation.records import TAG_CATEGORIES
    from groundwork.contract import CONTRACT_VERSION
    from pipelines.config import BuildConfig
    from sharding.layout import Layout

    rng = np.random.default_rng(seed)
    layout = Layout(out)
    source = np.where(rng.random(n) < 0.9, "danbooru", "extra")
    columns: dict[str, Any] = {
        "key": pc.binary_join_element_wise("s", pc.cast(pa.array(np.arange(n)), pa.string()), "_"),
        "source": pa.array(source),
        "quality_score": pa.array(rng.random(n)),
        "score": pa.array(rng.integers(0, 200, n).astype(np.float64)),
        "bucket_w": pa.array(rng.choice([512, 640, 768], n).astype(np.int32)),
        "bucket_h": pa.array(rng.choice([512, 640, 768], n).astype(np.int32)),
    }
    for cat in TAG_CATEGORIES:
        if cat == "character":
            columns[f"tags_{cat}"] = _tags(rng, n, 150_000, "char")
        elif cat == "artist":
            columns[f"tags_{cat}"] = _tags(rng, n, 300_000, "artist")
        else:
            columns[f"tags_{cat}"] = pa.array([[]] * n, pa.list_(pa.string()))
    layout.write_parquet(layout.manifest, pa.table(columns))
    identity = {"contract": CONTRACT_VERSION, "config": BuildConfig().to_dict(), "sources": []}
    layout.write_json(layout.build_json, {"complete": True, "request": identity})


_CHILD = """
import json, resource, sys, time
from groundwork.configtable import from_table
from curation.weighting import WeightConfig
from pipelines.tools.reweight import reweight
out, policy = sys.argv[1], json.loads(sys.argv[2])
cfg = from_table(WeightConfig, policy, "weights")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
result = reweight(out, cfg, activate_it=True)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024, "baseline_rss_mib": before / 1024,
                  "samples": result.samples}))
"""


def measure(out: str, policy: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, out, json.dumps(policy)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"reweight bench child failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(args) -> dict[str, Any]:
    repeats = max(1, getattr(args, "repeats", 3))
    tmp = tempfile.mkdtemp(prefix="linepairs-bench-reweight-")
    try:
        out = os.path.join(tmp, "out")
        make_build(out, SAMPLES)
        report: dict[str, Any] = {"samples": SAMPLES, "repeats": repeats}
        for name, policy in POLICIES.items():
            runs = [measure(out, policy) for _ in range(repeats)]
            report[name] = {
                "policy": policy,
                "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
                "seconds_per_million": round(
                    statistics.median(r["seconds"] for r in runs) * 1e6 / SAMPLES, 3
                ),
                "peak_rss_mib_max": round(max(r["peak_rss_mib"] for r in runs), 1),
                "baseline_rss_mib": round(statistics.median(r["baseline_rss_mib"] for r in runs), 1),
            }
        report["note"] = (
            "manifest only (no shard exists in the scratch OUT); peak RSS includes the import baseline"
        )
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
