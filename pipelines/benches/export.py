"""``linepairs export``: samples/s of a real export against reading the same shards raw, and peak
memory exporting a 1M-sample build.

- ``corpus``: a default build of the shared illustrations, exported (``--to kohya``, which inverts
  every drawing, kohya ``--no-invert``, which copies the shards' bytes, and ``--to simpletuner``,
  which also re-encodes every illustration as PNG) into a fresh DEST per repeat;
  beside it the same shards read raw (every member of every tar, streamed, as the export reads
  them). One worker each, so the ratio compares the same parallelism; the default ``--workers``
  rate is reported too. Medians of ``--repeats``.
- ``million``: a synthetic finished build of 1,000,000 samples (two sources, two tiers, tiny
  images, 1000 shards), exported ``--to diffusers`` (2 files per sample and a draw list) by the REAL
  ``run_export`` in a fresh child process: its peak RSS (the import baseline beside it) and seconds.
  It needs ~3 GB for the shards and ~8 GB for DEST under the temporary folder (removed after).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any

import cv2
import numpy as np

from ..errors import UsageError
from ..paths import corpus_illustrations
from . import link_or_copy

MILLION = 1_000_000
CASES = (("kohya", "kohya", None), ("kohya_no_invert", "kohya", False), ("simpletuner", "simpletuner", None))
SHARD_SAMPLES = 1000


def read_raw(out: str) -> int:
    """Every member of every shard, streamed once: the floor an export cannot beat."""
    from sharding.layout import Layout

    layout = Layout(out)
    samples = 0
    for entry in layout.read_json(layout.shards_json)["shards"]:
        with open(layout.shard(entry["path"]), "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for info in tar:
                tar.extractfile(info).read()
        samples += entry["samples"]
    return samples


def _cpu_per_item(fn) -> float:
    """CPU milliseconds per item of ``fn()``: unlike wall time, not inflated by a busy machine."""
    start = time.process_time()
    n = fn()
    return (time.process_time() - start) * 1000 / n


def _timed(fn) -> float:
    """Items per second of ``fn()`` (which returns how many it did)."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def corpus(args, tmp: str) -> dict[str, Any]:
    from curation.sources import parse_source

    from ..build.request import BuildRequest
    from ..build.run import run_build
    from ..config import BuildConfig
    from ..export import ExportRequest, run_export

    folder = args.corpus or corpus_illustrations()
    if not folder or not os.path.isdir(folder):
        raise UsageError(
            "no corpus: pass --corpus FOLDER (the default ../shared/corpus/illustrations is absent)"
        )
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    for n in names[: args.limit] if args.limit else names:
        link_or_copy(os.path.join(folder, n), os.path.join(src, n))
    out = os.path.join(tmp, "out")
    summary = run_build(BuildRequest([parse_source(src)], out, BuildConfig(), show_progress=False))
    repeats = max(1, args.repeats)
    report: dict[str, Any] = {"samples": summary.counts["samples"], "repeats": repeats}
    raw = [_timed(lambda: read_raw(out)) for _ in range(repeats)]
    report["raw_read_samples_per_s"] = round(statistics.median(raw), 1)
    raw_cpu = statistics.median(_cpu_per_item(lambda: read_raw(out)) for _ in range(repeats))
    report["raw_read_cpu_ms_per_sample"] = round(raw_cpu, 3)
    # kohya as is (drawings inverted: a PNG decode + encode each), kohya copying the shards' bytes
    # (--no-invert), SimpleTuner (the illustration re-encoded as PNG too)
    for name, target, invert in CASES:
        rates: dict[int, list[tuple[float, float]]] = {}
        for workers in (1, min(4, os.cpu_count() or 1)):
            for i in range(repeats):
                dest = os.path.join(tmp, f"dest-{name}-{workers}-{i}")
                req = ExportRequest(out, dest, target, invert=invert, workers=workers, show_progress=False)
                summary = run_export(req)
                written = summary.report["counts"]["written"]
                # end to end, and the shard step alone (what grows with the build; the rest is the
                # plan and a few config files, fixed costs that dominate a 40-sample build)
                rates.setdefault(workers, []).append(
                    (written / summary.seconds, written / summary.timings["shards"],
                     summary.timings["shards_cpu"] * 1000 / written)
                )  # fmt: skip
                shutil.rmtree(dest)
        one = rates[1]
        most = max(rates)
        end_to_end = statistics.median(r[0] for r in one)
        shards = statistics.median(r[1] for r in one)
        report[name] = {
            "samples_per_s_1_worker": round(end_to_end, 1),
            "samples_per_s_1_worker_shard_step": round(shards, 1),
            f"samples_per_s_{most}_workers": round(statistics.median(r[0] for r in rates[most]), 1),
            f"samples_per_s_{most}_workers_shard_step": round(
                statistics.median(r[1] for r in rates[most]), 1
            ),
            "ratio_to_raw_read": round(end_to_end / report["raw_read_samples_per_s"], 3),
            "ratio_to_raw_read_shard_step": round(shards / report["raw_read_samples_per_s"], 3),
            "cpu_ms_per_sample_shard_step": round(statistics.median(r[2] for r in one), 3),
            "cpu_ratio_raw_read_to_export": round(raw_cpu / statistics.median(r[2] for r in one), 3),
        }
    return report


def make_million(out: str, n: int = MILLION, per_shard: int = SHARD_SAMPLES, seed: int = 0) -> None:
    """A finished-looking build of ``n`` tiny samples: build.json, manifest.parquet, weights/v1,
    shards.json and the tars (a 16x16 JPEG, the json with tags, a canny PNG per sample)."""
    import hashlib

    import pyarrow as pa

    from groundwork.contract import CONTRACT_VERSION, drawing_member
    from sharding.layout import Layout
    from sharding.weights import set_active, write_version

    from ..config import BuildConfig

    rng = np.random.default_rng(seed)
    layout = Layout(out)
    layout.ensure_root()
    image = cv2.imencode(".jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))[1].tobytes()
    drawing = cv2.imencode(".png", np.where(rng.random((16, 16)) < 0.1, 0, 255).astype(np.uint8))[1].tobytes()
    source = np.where(rng.random(n) < 0.8, "danbooru", "extra")
    tier = np.where(rng.random(n) < 0.125, "high", "low")
    weight = np.where(tier == "high", 4.0, 1.0) * np.where(source == "extra", 2.0, 1.0)
    weight /= weight.mean()
    keys = [f"{s}_{i}" for i, s in enumerate(source)]
    shard_of = [f"shards/512x768/{i // per_shard:06d}.tar" for i in range(n)]
    entries = []
    for start in range(0, n, per_shard):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(start, min(n, start + per_shard)):
                meta = json.dumps({"key": keys[i], "tags": {"character": "", "copyright": "", "artist": f"artist_{i % 97}",
                                   "general": "1girl solo long_hair", "meta": ""}}).encode()  # fmt: skip
                for ext, data in (("jpg", image), ("json", meta), (drawing_member("canny"), drawing)):
                    info = tarfile.TarInfo(f"{keys[i]}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        data = buf.getvalue()
        path = shard_of[start]
        os.makedirs(os.path.dirname(layout.shard(path)), exist_ok=True)
        with open(layout.shard(path), "wb") as fh:
            fh.write(data)
        entries.append({"path": path, "samples": min(per_shard, n - start), "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
    layout.write_json(layout.shards_json, {"shards": entries})
    manifest = pa.table({
        "key": pa.array(keys), "source": pa.array(source), "shard": pa.array(shard_of),
        "bucket_w": pa.array(np.full(n, 512, np.int32)), "bucket_h": pa.array(np.full(n, 768, np.int32)),
        "extractors": pa.array([["canny"]] * n, pa.list_(pa.string())),
    })  # fmt: skip
    layout.write_parquet(layout.manifest, manifest)
    version = pa.table({
        "key": manifest["key"], "weight": pa.array(weight), "tier": pa.array(tier), "quality": pa.array(rng.random(n)),
        "tier_weight": pa.array(weight), "tag_factor": pa.array(np.ones(n)), "source_factor": pa.array(np.ones(n)),
    })  # fmt: skip
    write_version(layout, "v1", version, {})
    set_active(layout, "v1")
    config = BuildConfig().to_dict()
    config["extractors"] = [{"name": "canny", "weights": None, "options": {}}]
    layout.write_json(layout.build_json, {"complete": True, "contract": CONTRACT_VERSION,
                                          "request": {"config": config, "sources": []}})  # fmt: skip


_CHILD = """
import json, sys, time
from pipelines.benches.scale import _peak_mb, _reset_peak
from pipelines.export import ExportRequest, run_export
_reset_peak()  # VmHWM from here: a forked child's ru_maxrss starts at its parent's size
before = _peak_mb()
t = time.perf_counter()
summary = run_export(ExportRequest(sys.argv[1], sys.argv[2], sys.argv[3], show_progress=False))
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss_mib": _peak_mb(), "baseline_rss_mib": before,
                  "written": summary.report["counts"]["written"], "draws": summary.report["repeats"]["draws"],
                  "max_abs_error": summary.report["max_abs_error"], "timings": summary.timings}))
"""


def million(tmp: str) -> dict[str, Any]:
    out = os.path.join(tmp, "million")
    t = time.perf_counter()
    make_million(out)
    made = time.perf_counter() - t
    raw = _timed(lambda: read_raw(out))
    dest = os.path.join(tmp, "million-dest")
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, out, dest, "diffusers"], capture_output=True, text=True
    )
    if res.returncode != 0:
        raise RuntimeError(f"export bench child failed: {res.stderr[-2000:]}")
    child = json.loads(res.stdout.strip().splitlines()[-1])
    return {
        "samples": MILLION,
        "target": "diffusers",
        "synthetic_build_seconds": round(made, 1),
        "raw_read_samples_per_s": round(raw, 1),
        "export_seconds": round(child["seconds"], 1),
        "export_samples_per_s": round(child["written"] / child["seconds"], 1),
        "ratio_to_raw_read": round(child["written"] / child["seconds"] / raw, 3),
        "step_seconds": {k: round(v, 1) for k, v in child["timings"].items()},
        "draws": child["draws"],
        "peak_rss_mib": round(child["peak_rss_mib"], 1),
        "baseline_rss_mib": round(child["baseline_rss_mib"], 1),
        "max_abs_error": child["max_abs_error"],
        "under_1_gb": child["peak_rss_mib"] < 1024,
    }


def run(args) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="linepairs-bench-export-")
    try:
        return {"corpus": corpus(args, tmp), "million": million(tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
