"""Loader throughput on a build of the shared corpus: keys-only draws/s and decoded samples/s.

Keys-only is the sampler alone (what ``audit`` runs), stream creation included; decoded is the
steady state (stream made, tar indexes read) of reads by offset, JPEG + PNG decoding and
stacking, with 1 decode thread and with 4.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

from sharding.loader import batches

from ..build.request import BuildRequest
from ..build.run import run_build
from ..config import BuildConfig
from ..errors import UsageError
from ..paths import corpus_illustrations
from . import link_or_copy

KEYS_DRAWS = 200_000
KEYS_BATCH = 64
DECODED_BATCH = 16
DECODED_BATCHES = 40


def _rate(fn, repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def run(args) -> dict[str, Any]:
    folder = args.corpus or corpus_illustrations()
    if not folder or not os.path.isdir(folder):
        raise UsageError(
            "no corpus: pass --corpus FOLDER (the default ../shared/corpus/illustrations is absent)"
        )
    from curation.sources import parse_source

    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    src = tempfile.mkdtemp(prefix="lp-bench-loader-src-")
    out = os.path.join(tempfile.mkdtemp(prefix="lp-bench-loader-"), "out")
    for n in names[: args.limit] if args.limit else names:
        link_or_copy(os.path.join(folder, n), os.path.join(src, n))
    repeats = max(1, args.repeats)
    try:
        summary = run_build(BuildRequest([parse_source(src)], out, BuildConfig(), show_progress=False))

        def keys_only() -> int:
            stream = batches(out, KEYS_BATCH, seed=0, keys_only=True)
            return sum(len(k) for k in itertools.islice(stream, KEYS_DRAWS // KEYS_BATCH))

        def decoded(threads: int):
            # Steady state: the stream is made and every shard's tar index is read before timing.
            stream = batches(out, DECODED_BATCH, seed=0, threads=threads)
            for shard in stream.pop.shard_names:
                stream.reader().index(shard)

            def go() -> int:
                return sum(len(b) for b in itertools.islice(stream, DECODED_BATCHES))

            return go

        keys_rate, keys_all = _rate(keys_only, repeats)
        one_rate, one_all = _rate(decoded(1), repeats)
        four_rate, four_all = _rate(decoded(4), repeats)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    return {
        "samples_in_build": summary.counts["samples"],
        "buckets": len(summary.counts["buckets"]),
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "keys_only_draws_per_s": round(keys_rate),
        "keys_only_draws_per_s_all": [round(r) for r in keys_all],
        "decoded_samples_per_s_1_thread": round(one_rate, 1),
        "decoded_samples_per_s_4_threads": round(four_rate, 1),
        "decoded_all_1_thread": [round(r, 1) for r in one_all],
        "decoded_all_4_threads": [round(r, 1) for r in four_all],
        "ratio_4_threads_to_1": round(four_rate / one_rate, 3),
        "decoded_batch_size": DECODED_BATCH,
    }
