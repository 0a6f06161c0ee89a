"""Quality judgment on the shared labelled calibration set: the figures of ``linepairs calibrate --cv 5``.

Recall (overall and per label), ROC AUC, the high tier's rejects and the synthetic images kept, out of
fold, as the mean and range over 10 fold seeds (the spread of a 151-image measurement:
``pipelines.tools.calibrate.cross_validated``, the same figures ``artmodel.json`` records); plus the scan's
cost per image (median of repeats, one process, one core: noisy on a shared machine) and, for every
ONNX scorer whose published weights are in the cache, its cost per image on CPU.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from curation.decode import decode_image, read_bytes
from curation.metrics import detail_crop, lettering_copy, measure, work_copy

from ..config import BuildConfig
from ..paths import shared_dir
from ..tools.calibrate import cross_validated, read_labels, scan_labelled

SEEDS = 10
ONNX_SCORERS = ("anime_real", "anime_classify", "monochrome", "dbaesthetic", "dbrating")


def _scorer_costs(images: list) -> dict[str, Any]:
    """Seconds per image of each ONNX scorer on CPU (one thread, as in a CPU scorer actor), when cached."""
    from curation import scorers

    out: dict[str, Any] = {}
    for name in ONNX_SCORERS:
        try:
            scorer = scorers.create(name)
        except ValueError as exc:  # no cached weights: WeightsError names the URL
            out[name] = f"skipped: {str(exc)[:120]}"
            continue
        scorer(images[:1])  # warm-up: session allocation
        t = time.perf_counter()
        scorer(images)
        out[name] = round((time.perf_counter() - t) / len(images), 4)
    return out


def run(args: Any) -> dict[str, Any]:
    import cv2

    cv2.setNumThreads(1)  # one core, as a scan task runs; OpenCV threads thrash on a loaded machine
    shared = shared_dir()
    folder = os.path.join(shared, "corpus", "calibration") if shared else ""
    labels_path = os.path.join(folder, "LABELS.csv")
    if not os.path.isfile(labels_path):
        return {"skipped": "../shared/corpus/calibration is absent"}
    cfg = BuildConfig()
    labels = read_labels(labels_path)
    t0 = time.perf_counter()
    rows, settings = scan_labelled(folder, labels, cfg)
    scan_s = time.perf_counter() - t0
    figures = cross_validated(rows, settings, cfg, folds=5, seeds=SEEDS)
    # cost of the measures alone on a few images (decode excluded), median of repeats
    timings, smalls = [], []
    for name in list(labels)[: max(1, min(len(labels), args.limit or 12))]:
        rgb = decode_image(read_bytes(os.path.join(folder, name)), cfg.scan.max_pixels).rgb
        small, detail, lettering = work_copy(rgb), detail_crop(rgb), lettering_copy(rgb)
        smalls.append(small)
        reps = []
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            measure(small, None, detail, lettering)
            reps.append(time.perf_counter() - t)
        timings.append(statistics.median(reps))
    return {
        "images": len(rows),
        "folds": 5,
        "fold_seeds": SEEDS,
        "cross_validated": figures,
        "scan_wall_s": round(scan_s, 2),
        "measure_ms_per_image_median": round(1000 * statistics.median(timings), 1),
        "onnx_scorer_s_per_image_cpu": _scorer_costs(smalls),
        "note": "timings on a shared 2-core machine are noisy; figures are out of fold",
    }
