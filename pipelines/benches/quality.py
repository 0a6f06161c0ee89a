"""Quality judgment on the shared labelled calibration set: the figures of ``linepairs calibrate --cv 5``.

Recall, ROC AUC and the high tier's rejects, out of fold, as the mean and range over several fold
seeds (the spread of a 115-image measurement); plus the scan's cost per image (median of repeats,
one process, one core: noisy on a shared machine).
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from typing import Any

import numpy as np

from curation.decode import decode_image, read_bytes
from curation.metrics import detail_crop, measure, work_copy

from ..calibrate import read_labels, refit_out_of_fold, scan_labelled, summarise, tiers_of
from ..config import BuildConfig
from ..paths import shared_dir

SEEDS = 5
FIGURES = ("keep_recall", "reject_recall", "quality_auc", "high_tier_reject_share")


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
    runs = []
    for seed in range(SEEDS):
        trial = copy.deepcopy(rows)
        refit_out_of_fold(trial, settings, 5, seed)
        tiers_of(trial, cfg)
        runs.append(summarise(trial))
    figures = {
        k: {
            "mean": round(float(np.mean([r[k] for r in runs])), 4),
            "min": round(float(np.min([r[k] for r in runs])), 4),
            "max": round(float(np.max([r[k] for r in runs])), 4),
        }
        for k in FIGURES
    }
    synthetic_kept = sorted({f for r in runs for f in r["kept_rejects"] if f.startswith("synthetic_")})
    # cost of the measures alone on a few images (decode excluded), median of repeats
    timings = []
    for name in list(labels)[: max(1, min(len(labels), args.limit or 12))]:
        rgb = decode_image(read_bytes(os.path.join(folder, name)), cfg.scan.max_pixels).rgb
        small, detail = work_copy(rgb), detail_crop(rgb)
        reps = []
        for _ in range(max(1, args.repeats)):
            t = time.perf_counter()
            measure(small, None, detail)
            reps.append(time.perf_counter() - t)
        timings.append(statistics.median(reps))
    return {
        "images": len(rows),
        "folds": 5,
        "fold_seeds": SEEDS,
        "cross_validated": figures,
        "synthetic_kept": synthetic_kept,
        "scan_wall_s": round(scan_s, 2),
        "measure_ms_per_image_median": round(1000 * statistics.median(timings), 1),
        "note": "timings on a shared 2-core machine are noisy; figures are out of fold",
    }
