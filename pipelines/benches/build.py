"""End-to-end build throughput on the shared corpus beside the single-core kernel floor.

The floor is decode + crop/resize + every configured extractor + encode, one image after another
on one core with no Ray and no tar: what the machine can do per core at best. Ratio =
end-to-end samples/s / floor samples/s; on N cores a perfect pipeline approaches N.

The steady state also reports a second floor, the build's own shard code (pair-quality check,
the input's sha256, sample JSON, tar) in one process on one core: the ratio to it is what the
distribution costs (Ray, idle cores, the plan on the driver), the rest of the gap to the first
floor is work every sample needs (docs/scale.md, "Two floors").
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, NamedTuple

import cv2
import numpy as np

import lineart
from curation.decode import decode_image, read_bytes
from sharding.materialize import bucket_image, encode_image, encode_lines, resize_to_bucket

from ..build.request import BuildRequest
from ..build.run import run_build
from ..config import BuildConfig
from ..errors import UsageError
from ..paths import corpus_illustrations
from ..phasetimes import PhaseTrace, gap_to_floor, phase_table
from . import link_or_copy


def _images(folder: str, limit: int) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    return [os.path.join(folder, n) for n in (names[:limit] if limit else names)]


class PerItem(NamedTuple):
    """Seconds per item of a one-core loop: wall (perf_counter) and this process's CPU time."""

    wall: float
    cpu: float


def kernel_floor(rows: list[dict[str, Any]], cfg: BuildConfig, *, full_decode: bool = False) -> PerItem:
    """Seconds per sample for the tight single-core materialize loop over planned ``rows``.

    ``full_decode``: the kernel before issue 21 (Pillow decodes every pixel, copied into NumPy, then
    crop and resize) beside today's ``bucket_image`` (a JPEG decoded at the DCT scale that covers
    its crop), so the floor's gain is measured in one run."""
    cv2.setNumThreads(1)
    try:
        extractors = [lineart.create(e.name, weights=e.weights, **e.options) for e in cfg.extractors]
        start, cpu = time.perf_counter(), time.process_time()
        for row in rows:
            data = read_bytes(row["location"])
            bucket = (row["bucket_w"], row["bucket_h"])
            box = (row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"])
            if full_decode:
                img = resize_to_bucket(decode_image(data, cfg.scan.max_pixels).rgb, box, bucket)
            else:
                img = bucket_image(data, cfg.scan.max_pixels, (row["width"], row["height"]), box, bucket)
            encode_image(img, cfg.shards.image_format, cfg.shards.jpeg_quality)
            for ext in extractors:
                encode_lines(ext(img[None])[0])
        n = max(len(rows), 1)
        return PerItem((time.perf_counter() - start) / n, (time.process_time() - cpu) / n)
    finally:
        cv2.setNumThreads(-1)


def planned_rows(out: str) -> list[dict[str, Any]]:
    """What materialize needs of every planned sample of ``out``."""
    from sharding.layout import Layout

    layout = Layout(out)
    cols = [
        "location",
        "width",
        "height",
        "bucket_w",
        "bucket_h",
        "crop_left",
        "crop_top",
        "crop_right",
        "crop_bottom",
    ]
    return layout.read_parquet(layout.plan, columns=cols).to_pylist()


STEADY_VARIANTS = 15  # x 41 corpus images = 615 distinct inputs


def augmented_corpus(paths: list[str], folder: str, variants: int = STEADY_VARIANTS) -> list[str]:
    """Distinct inputs made deterministically from the corpus: flips, crops, rescales, channel shifts."""
    out = []
    for i, path in enumerate(paths):
        rgb = decode_image(read_bytes(path), 10**9).rgb
        for v in range(variants):
            img = rgb[:, ::-1] if v % 2 else rgb
            h, w = img.shape[:2]
            cut = (v % 5) * 0.03  # crop up to 12 % off two edges
            img = img[int(h * cut) :, : w - int(w * cut)]
            scale = 0.8 + 0.05 * (v % 9)
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            img = np.clip(img.astype(np.int16) + (v % 7 - 3) * 4, 0, 255).astype(np.uint8)
            name = os.path.join(folder, f"{i:03d}_{v:02d}.jpg")
            cv2.imwrite(name, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            out.append(name)
    return out


def scan_floor(paths: list[str], cfg: BuildConfig) -> PerItem:
    """Seconds per input of the scan's own work (read, sha256, decode for metrics, metrics, hash) on one core."""
    from curation.scan import make_settings, scan_row

    settings = make_settings(
        scan=cfg.scan, filters=cfg.filters, metrics=cfg.metrics, quality=cfg.quality,
        sources=["bench"] * len(paths), scores=np.full(len(paths), np.nan), favs=np.full(len(paths), np.nan),
    )  # fmt: skip
    cv2.setNumThreads(1)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for path in paths:
            scan_row({"source": "bench", "source_id": path, "location": path}, settings)
        return PerItem((time.perf_counter() - start) / len(paths), (time.process_time() - cpu) / len(paths))
    finally:
        cv2.setNumThreads(-1)


def steady(paths: list[str]) -> dict[str, Any]:
    """Steady state: >= 600 distinct inputs, dedup off, one build on every core beside the floor of
    the same inputs (scan work + materialize kernel, one core, times the cores) measured in this run."""
    from curation.dedup import DedupConfig
    from curation.sources import parse_source

    cfg = dataclasses.replace(BuildConfig(), dedup=DedupConfig(enabled=False))
    src = tempfile.mkdtemp(prefix="lp-bench-steady-")
    out = tempfile.mkdtemp(prefix="lp-bench-steady-out-")
    shutil.rmtree(out)
    try:
        inputs = augmented_corpus(paths, src)
        trace = PhaseTrace()
        t = time.perf_counter()
        summary = run_build(BuildRequest([parse_source(src)], out, cfg, show_progress=False, trace=trace))
        # the command's wall: build.json's total stops before the finalize and the Ray stop
        timings = dict(summary.timings, total=time.perf_counter() - t)
        samples = summary.counts["samples"]
        rows = planned_rows(out)
        scan_each = scan_floor(inputs, cfg)
        scan_per_sample = scan_each.wall * len(inputs) / max(samples, 1)
        kernel_each = kernel_floor(rows, cfg)
        kernel, kernel_full = kernel_each.wall, kernel_floor(rows, cfg, full_decode=True).wall
        # the build's own materialize (the kernel plus the pair-quality check, the input's sha256,
        # the sample JSON and caption, the tar and its fsync) over every planned shard, one core, no Ray
        shard_work = 1.0 / materialize_in_process(out, cfg)
        scales = _dct_scales(rows, cfg)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    floor = cores / (scan_per_sample + kernel)
    in_process_floor = cores / (scan_per_sample + shard_work)
    phases = phase_table(trace, cores)
    # On a shared machine other jobs take the cores in the floor loops and in the build alike, at
    # different moments. In CPU time: the core-seconds the floor needs for this work against the
    # core-seconds the build had (wall x cores less the time its units waited for a core).
    needed = scan_each.cpu * len(inputs) + kernel_each.cpu * samples
    waited = sum(row["in_unit_runqueue_wait_core_s"] for row in phases.values())
    end_to_end = samples / timings["total"]
    # the build's wall seconds beyond the floor's for the same work, split by where they went
    gap = gap_to_floor(phases, timings, samples / floor, (shard_work - kernel) * samples, cores)
    return {
        "inputs": len(inputs),
        "samples": samples,
        "cores": cores,
        "end_to_end_samples_per_s": round(end_to_end, 3),
        # one core's scan (over every input) + materialize kernel (over the kept ones), times the cores
        "floor_samples_per_s": round(floor, 3),
        "ratio_end_to_end_to_floor": round(end_to_end / floor, 3),
        # the materialize kernel alone, one core: the DCT-scaled decode against the full decode
        "kernel_samples_per_s_one_core": round(1 / kernel, 3),
        "kernel_full_decode_samples_per_s_one_core": round(1 / kernel_full, 3),
        "kernel_speedup_over_full_decode": round(kernel_full / kernel, 3),
        "floor_with_full_decode_samples_per_s": round(cores / (scan_per_sample + kernel_full), 3),
        # The same with the build's own shard code in place of the kernel loop: what a perfect
        # scheduler of this work would reach; the ratio to it is what Ray, the idle cores and the
        # plan on the driver cost (docs/scale.md, "Two floors").
        "in_process_floor_samples_per_s": round(in_process_floor, 3),
        "ratio_end_to_end_to_in_process_floor": round(end_to_end / in_process_floor, 3),
        # per sample, the shard work beyond the kernel loop
        "shard_work_beyond_kernel_ms_per_sample": round(1000 * (shard_work - kernel), 2),
        "samples_by_dct_scale": scales,
        "phase_s": {k: round(v, 3) for k, v in timings.items()},
        # per phase: capacity (wall x cores) against kernel CPU and idle core-seconds (pipelines/phasetimes.py)
        "phases": phases,
        "ratio_cpu_floor_to_core_s_not_taken_by_others": round(
            needed / max(timings["total"] * cores - waited, 1e-9), 3
        ),
        # wall seconds of the run outside enumerate/scan/plan/materialize: Ray's start and stop, the finalize
        "outside_phases_s": gap["outside_phases"],
        "gap_to_floor_s": gap,
        "load_average_1min_after": round(load, 2),
    }


def _dct_scales(rows: list[dict[str, Any]], cfg: BuildConfig) -> dict[str, int]:
    """How many planned samples decode at each DCT scale (1: full)."""
    from collections import Counter

    from curation.decode import decode_for_crop

    seen: Counter[str] = Counter()
    for row in rows:
        box = (row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"])
        data = read_bytes(row["location"])
        seen[
            str(decode_for_crop(data, cfg.scan.max_pixels, box, (row["bucket_w"], row["bucket_h"])).scale)
        ] += 1
    return dict(sorted(seen.items()))


def run(args) -> dict[str, Any]:
    folder = args.corpus or corpus_illustrations()
    if not folder or not os.path.isdir(folder):
        raise UsageError(
            "no corpus: pass --corpus FOLDER (the default ../shared/corpus/illustrations is absent)"
        )
    paths = _images(folder, args.limit)
    src = tempfile.mkdtemp(prefix="lp-bench-src-")
    for p in paths:
        link_or_copy(p, os.path.join(src, os.path.basename(p)))
    cfg = BuildConfig()
    from curation.sources import parse_source

    walls, rates, phases, in_process = [], [], [], []
    samples = 0
    try:
        for _ in range(max(1, args.repeats)):
            out = tempfile.mkdtemp(prefix="lp-bench-out-")
            shutil.rmtree(out)
            t = time.perf_counter()
            summary = run_build(BuildRequest([parse_source(src)], out, cfg, show_progress=False))
            walls.append(time.perf_counter() - t)  # the command's wall, finalize and Ray's stop included
            samples = summary.counts["samples"]
            rates.append(samples / summary.timings["materialize"])
            phases.append(summary.timings)
            in_process.append(materialize_in_process(out, cfg))
            rows = planned_rows(out)
            shutil.rmtree(out, ignore_errors=True)
        floors = [kernel_floor(rows, cfg).wall for _ in range(max(1, args.repeats))]
    finally:
        shutil.rmtree(src, ignore_errors=True)
    floor_rate = 1.0 / statistics.median(floors)
    steady_state = steady(paths)
    end_to_end = samples / statistics.median(walls)
    return {
        "images": len(paths),
        "samples": samples,
        "extractors": [e.name for e in cfg.extractors],
        "cpus": os.cpu_count(),
        "repeats": max(1, args.repeats),
        "end_to_end_samples_per_s": round(end_to_end, 3),
        "end_to_end_wall_s_median": round(statistics.median(walls), 3),
        "materialize_samples_per_s": round(statistics.median(rates), 3),
        "kernel_floor_samples_per_s_one_core": round(floor_rate, 3),
        "ratio_end_to_end_to_floor": round(end_to_end / floor_rate, 3),
        "ratio_materialize_to_floor": round(statistics.median(rates) / floor_rate, 3),
        # the same shards written in this process on one core: the per-sample cost of materialize
        # without Ray, actor start-up (~1.6 s importing torch) or a second core
        "materialize_in_process_one_core_samples_per_s": round(statistics.median(in_process), 3),
        "ratio_in_process_to_floor": round(statistics.median(in_process) / floor_rate, 3),
        "steady": steady_state,
        "phase_s_median": {
            k: round(statistics.median(p[k] for p in phases), 3)
            for k in ("enumerate", "scan", "plan", "materialize", "total")
        },
    }


def materialize_in_process(out: str, cfg: BuildConfig) -> float:
    """Samples/s writing every shard of ``out``'s plan again, in this process on one core."""
    from sharding.layout import Layout

    from ..build.plan import PlanReader
    from ..tasks import MaterializeSettings, ShardMaterializer

    built = Layout(out)
    plan = PlanReader(built, built.plan)
    scratch = tempfile.mkdtemp(prefix="lp-bench-mat-")
    cv2.setNumThreads(1)
    try:
        writer = ShardMaterializer(Layout(scratch), MaterializeSettings.from_config(cfg, "cpu"))
        start = time.perf_counter()
        for shard in sorted(plan.spans):
            writer.materialize(plan.rows(shard))
        return plan.num_rows / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(-1)
        shutil.rmtree(scratch, ignore_errors=True)
