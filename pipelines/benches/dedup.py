"""Near-duplicate search and grouping on 10 million synthetic 64-bit hashes: time and peak memory.

Hashes are uniform random (the worst case for a multi-index table: every substring value is
equally likely) with 1 % planted copies 0..radius bits from another item. Each repeat runs in a
fresh child process so that its peak RSS is the search's own; recall checks that every planted
copy landed in its original's group.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from curation.dedup import DedupConfig, as_unsigned, choose_keepers, components, near_pairs

HASHES = 10_000_000
PLANTED = 0.01


def synthetic(n: int, radius: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, copy index, original index) with int(n * PLANTED) planted copies."""
    rng = np.random.default_rng(seed)
    h = as_unsigned(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)).copy()
    m = int(n * PLANTED)
    copies = rng.choice(n, m, replace=False)
    originals = rng.integers(0, n, m)
    originals = np.where(originals == copies, (originals + 1) % n, originals)
    flips = np.zeros(m, np.uint64)
    for _ in range(radius):  # up to `radius` random bits per copy (a bit drawn twice flips once)
        bit = rng.integers(0, 64, m).astype(np.uint64)
        use = rng.random(m) < 0.75
        flips |= np.where(use, np.uint64(1) << bit, np.uint64(0))
    h[copies] = h[originals] ^ flips
    return h.view(np.int64), copies, originals


def child(n: int, radius: int, parts: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    hashes, copies, originals = synthetic(n, radius)
    t1, c1 = time.perf_counter(), time.process_time()
    i, j = near_pairs(hashes, radius, parts)
    t2, c2 = time.perf_counter(), time.process_time()
    groups = components(n, i, j)
    rng = np.random.default_rng(1)
    keeper = choose_keepers(groups, rng.random(n), np.ones(n), np.arange(n))
    t3 = time.perf_counter()
    # a planted copy may sit within the radius of its original only through chains, or be pushed
    # further away by a second copy of the same item; both are fine as long as groups join them
    same = groups[copies] == groups[originals]
    within = np.bitwise_count(as_unsigned(hashes[copies]) ^ as_unsigned(hashes[originals])) <= radius
    return {
        "make_s": t1 - t0,
        "search_s": t2 - t1,
        "search_cpu_s": c2 - c1,  # wall can exceed it on a shared machine
        "group_s": t3 - t2,
        "pairs": int(len(i)),
        "dropped": int((keeper != np.arange(n)).sum()),
        "recall_planted": float(same[within].mean()) if within.any() else 1.0,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def run(args) -> dict[str, Any]:
    cfg = DedupConfig()
    n = int(os.environ.get("LINEPAIRS_BENCH_HASHES", HASHES))
    runs = []
    # One run by default: it takes minutes and its peak memory is the figure that matters;
    # LINEPAIRS_BENCH_DEDUP_REPEATS asks for more.
    for _ in range(max(1, int(os.environ.get("LINEPAIRS_BENCH_DEDUP_REPEATS", 1)))):
        code = f"import json; from pipelines.benches.dedup import child; print(json.dumps(child({n}, {cfg.radius}, {cfg.parts})))"
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 3)

    return {
        "hashes": n,
        "planted_copies": int(n * PLANTED),
        "radius": cfg.radius,
        "parts": cfg.parts,
        "repeats": len(runs),
        "search_s_median": med("search_s"),
        "search_cpu_s_median": med("search_cpu_s"),
        "group_and_keep_s_median": med("group_s"),
        "total_s_median": round(statistics.median(r["search_s"] + r["group_s"] for r in runs), 3),
        "peak_rss_gb_max": round(max(r["peak_rss_gb"] for r in runs), 3),
        "pairs": runs[0]["pairs"],
        "dropped": runs[0]["dropped"],
        "recall_planted": min(r["recall_planted"] for r in runs),
        "cpus": os.cpu_count(),
    }
