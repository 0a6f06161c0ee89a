"""Measure the keep/reject filters and the quality score on a labelled folder, with the build's own code.

The folder is read by the folder source (``curation.sources.folder``), scanned by
``curation.scan.scan_rows`` with the settings a build makes from the same config, and ranked
into tiers by ``curation.weighting.compute_weights``: what is measured is what a build does.
Labels whose name starts with ``keep`` must be kept, ``reject`` rejected.

With ``folds`` > 1 the one fitted part, the illustration model (``curation.artmodel``), is refitted
k times: each image is then decided by a model that never saw it, and every figure is out of fold.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from curation import artmodel
from curation.metrics import failed_metric
from curation.quality import quality_score
from curation.scan import ScanSettings, scan_rows
from curation.sources.folder import iter_folder
from curation.weighting import HIGH, compute_weights, high_tier_eligible

from .config import BuildConfig
from .errors import UsageError

SOURCE = "calibration"


def read_labels(path: str) -> dict[str, str]:
    """``file -> label`` from a CSV with at least the columns ``file`` and ``label``."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
                raise UsageError(f"{path}: needs the columns 'file' and 'label', has {reader.fieldnames}")
            rows = [(reader.line_num, r["file"], r["label"]) for r in reader if r.get("file")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read labels {path}: {exc}") from None
    refuse_repeated_files(path, rows)
    labels = {file: label for _, file, label in rows}
    bad = sorted({v for v in labels.values() if not v.startswith(("keep", "reject"))})
    if bad:
        raise UsageError(f"{path}: labels must start with 'keep' or 'reject', got {', '.join(bad[:5])}")
    return labels


def refuse_repeated_files(path: str, rows: Sequence[tuple[int, str, str]]) -> None:
    """One label per file: a file listed twice (even with the same label) is refused, naming its
    lines, rather than the last row silently winning."""
    lines: dict[str, list[int]] = {}
    for line, file, _ in rows:
        lines.setdefault(file, []).append(line)
    repeated = [(f, ls) for f, ls in lines.items() if len(ls) > 1]
    if repeated:
        shown = "; ".join(f"{f!r} on lines {', '.join(map(str, ls))}" for f, ls in repeated[:5])
        raise UsageError(
            f"{path}: {len(repeated)} file(s) labelled more than once ({shown}); keep one row each"
        )


def refuse_links_out(images: str, locations: Mapping[str, str], labelled: Sequence[str]) -> None:
    """The build's symlink policy for the labelled images: one whose links resolve outside the
    folder is refused, never read."""
    from curation.sources.common import leaves_root

    outside = [why for f in labelled if (why := leaves_root(images, locations[f]))]
    if outside:
        raise UsageError(f"{len(outside)} labelled file(s) leave {images}: {'; '.join(outside[:3])}")


def settings_for(cfg: BuildConfig, records: Sequence[Mapping[str, Any]]) -> ScanSettings:
    """The scan settings a build of these records with ``cfg`` would use."""
    from .build import settings_from_records

    cols = {
        "source": pa.array([r["source"] for r in records], pa.string()),
        "score": pa.array([r.get("score") for r in records], pa.float64()),
        "fav_count": pa.array([r.get("fav_count") for r in records], pa.float64()),
    }
    return settings_from_records(cfg, pa.table(cols))


def scan_labelled(
    images: str, labels: Mapping[str, str], cfg: BuildConfig
) -> tuple[list[dict], ScanSettings]:
    """Scan rows of every labelled image (in label order), each with its ``label``."""
    if not os.path.isdir(images):
        raise UsageError(f"not a folder: {images}")
    found = list(iter_folder(SOURCE, images))
    records = {r.source_id: r.to_row() for r in found}
    missing = sorted(set(labels) - set(records))
    if missing:
        raise UsageError(f"{len(missing)} labelled file(s) not found in {images}: {', '.join(missing[:5])}")
    refuse_links_out(images, {r.source_id: r.location for r in found}, list(labels))
    chosen = [records[f] for f in labels]
    settings = settings_for(cfg, chosen)
    rows = scan_rows(chosen, settings)
    for row in rows:
        row["label"] = labels[row["source_id"]]
    return rows, settings


def _rules_only(settings: ScanSettings) -> ScanSettings:
    return replace(settings, metrics=replace(settings.metrics, min_illustration=0.0))


def refit_out_of_fold(rows: list[dict], settings: ScanSettings, folds: int, seed: int = 0) -> dict[str, Any]:
    """Re-decide every image with an illustration model fitted without its fold; returns the fit's summary.

    The model is fitted, as shipped, on the images that pass every other rule (the ones it has to
    judge), with label keep = 1. Rows change in place: ``illustration``, status, reason, score.
    """
    rules = _rules_only(settings)
    residual = [
        i
        for i, r in enumerate(rows)
        if r.get("sharpness") is not None
        and r["stage"] in (None, "metric")
        and failed_metric(r, rules.metrics, settings.min_side) is None
    ]
    x, have = artmodel.design([rows[i] for i in residual])
    index = [residual[j] for j in have]
    y = np.array([rows[i]["label"].startswith("keep") for i in index], np.int64)
    if len(np.unique(y)) < 2 or min(np.bincount(y)) < folds:
        raise UsageError(f"--cv {folds}: needs at least {folds} keep and reject images that pass the rules")
    p = artmodel.cross_val_predict(
        x, y, folds, seed=seed, l2=float((artmodel.load_model() or {}).get("l2", 1.0))
    )
    for i, prob in zip(index, p, strict=True):
        rows[i]["illustration"] = float(prob)
    for row in rows:
        if row.get("sharpness") is None or row["stage"] not in (None, "metric"):
            continue  # metadata / decode rejects do not depend on the model
        failed = failed_metric(row, settings.metrics, settings.min_side)
        row.update(status="kept", stage=None, reason=None, detail=None)
        if failed:
            row.update(status="rejected", stage="metric", reason=failed[0], detail=failed[1])
        q = quality_score(row, settings.quantiles.get(row.get("source") or "", {}), settings.quality)
        row["quality_score"] = None if math.isnan(q) else q
    return {
        "folds": folds,
        "seed": seed,
        "fitted_on": len(y),
        "keeps": int(y.sum()),
        "rejects": int(len(y) - y.sum()),
    }


def fit_model(rows: Sequence[dict], settings: ScanSettings, l2: float, source: str) -> dict[str, Any]:
    """The illustration model fitted on every labelled image that passes the other rules."""
    rules = _rules_only(settings)
    residual = [
        r for r in rows
        if r.get("sharpness") is not None and r["stage"] in (None, "metric")
        and failed_metric(r, rules.metrics, settings.min_side) is None
    ]  # fmt: skip
    x, have = artmodel.design(residual)
    y = np.array([residual[j]["label"].startswith("keep") for j in have], np.int64)
    model = artmodel.fit(x, y, l2)
    model["fitted_on"] = {
        "data": source,
        "images": len(y),
        "keeps": int(y.sum()),
        "rejects": int(len(y) - y.sum()),
    }
    return model


def auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """ROC AUC: P(a random positive scores above a random negative), ties counting half."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def tiers_of(rows: Sequence[dict], cfg: BuildConfig) -> None:
    """The tier each kept row would get in a build (``compute_weights`` over the kept rows)."""
    kept = [r for r in rows if r["status"] == "kept"]
    for r in rows:
        r["tier"] = None
    if not kept:
        return
    weighted = compute_weights(
        replace(cfg.weights, shares={}),
        sources=np.array([r["source"] for r in kept], dtype=object),
        keys=np.array([r["key"] for r in kept], dtype=object),
        quality_scores=np.array([np.nan if r["quality_score"] is None else r["quality_score"] for r in kept]),
        eligible=high_tier_eligible(
            cfg.weights,
            np.array([np.nan if r.get("illustration") is None else r["illustration"] for r in kept]),
            np.array([np.nan if r.get("upscale") is None else r["upscale"] for r in kept]),
        ),
    )
    for r, tier in zip(kept, weighted.tier, strict=True):
        r["tier"] = str(tier)


def summarise(rows: Sequence[dict]) -> dict[str, Any]:
    """Per label kept / rejected with reasons; recalls; AUC of the quality score; the high tier's rejects."""
    per_label: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = per_label.setdefault(r["label"], {"n": 0, "kept": 0, "rejected": 0, "reasons": Counter()})
        entry["n"] += 1
        if r["status"] == "kept":
            entry["kept"] += 1
        else:
            entry["rejected"] += 1
            entry["reasons"][r["reason"]] += 1
    for entry in per_label.values():
        entry["reasons"] = dict(sorted(entry["reasons"].items()))
    keeps = [r for r in rows if r["label"].startswith("keep")]
    rejects = [r for r in rows if r["label"].startswith("reject")]
    scored = [r for r in rows if r.get("quality_score") is not None]
    high = [r for r in rows if r.get("tier") == HIGH]
    wrong = [r for r in rows if (r["status"] == "kept") != r["label"].startswith("keep")]
    return {
        "images": len(rows),
        "labels": dict(sorted(per_label.items())),
        "keep_recall": sum(r["status"] == "kept" for r in keeps) / len(keeps) if keeps else math.nan,
        "reject_recall": sum(r["status"] != "kept" for r in rejects) / len(rejects) if rejects else math.nan,
        "quality_auc": auc(
            [r["quality_score"] for r in scored if r["label"].startswith("keep")],
            [r["quality_score"] for r in scored if r["label"].startswith("reject")],
        ),
        "high_tier": len(high),
        "high_tier_rejects": sorted(r["source_id"] for r in high if r["label"].startswith("reject")),
        "high_tier_reject_share": (
            sum(r["label"].startswith("reject") for r in high) / len(high) if high else 0.0
        ),
        "kept_rejects": sorted(r["source_id"] for r in rejects if r["status"] == "kept"),
        "rejected_keeps": sorted(r["source_id"] for r in keeps if r["status"] != "kept"),
        "wrong": len(wrong),
    }


def calibrate(
    images: str, labels_path: str, cfg: BuildConfig, folds: int = 0, seed: int = 0
) -> tuple[dict[str, Any], list[dict]]:
    """The report and the rows (scan columns + label + tier) of one labelled folder."""
    labels = read_labels(labels_path)
    if not labels:
        raise UsageError(f"{labels_path}: no labelled files")
    rows, settings = scan_labelled(images, labels, cfg)
    cv = refit_out_of_fold(rows, settings, folds, seed) if folds > 1 else None
    tiers_of(rows, cfg)
    report = summarise(rows)
    report["cross_validation"] = cv or "off: the shipped illustration model decides (fitted, not out of fold)"
    return report, rows


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [f"{'label':<22} {'n':>4} {'kept':>5} {'rej':>5}  reasons"]
    for label, e in report["labels"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in e["reasons"].items())
        lines.append(f"{label:<22} {e['n']:>4} {e['kept']:>5} {e['rejected']:>5}  {reasons}")
    lines += [
        f"keep recall {report['keep_recall']:.3f}, reject recall {report['reject_recall']:.3f}",
        f"quality score ROC AUC (keeps above rejects) {report['quality_auc']:.3f}",
        f"high tier: {report['high_tier']} samples, {len(report['high_tier_rejects'])} reject-labelled "
        f"({report['high_tier_reject_share']:.1%})",
        f"cross-validation: {report['cross_validation']}",
    ]
    return lines


def _thumb(path: str, height: int = 128) -> str:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:  # PIL-only formats (or not an image at all): no picture, the row still lists it
        return ""
    scale = height / img.shape[0]
    img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return (
        f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(buf.tobytes()).decode()}">' if ok else ""
    )


def contact_sheet(report: Mapping[str, Any], rows: Sequence[dict]) -> str:
    """Self-contained HTML: every wrong decision with its thumbnail, label, decision and reason (escaped)."""
    e = html.escape
    wrong = [r for r in rows if (r["status"] == "kept") != r["label"].startswith("keep")]
    high = [r for r in rows if r.get("tier") == HIGH and r["label"].startswith("reject")]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>linepairs calibrate</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:20px}.c{display:inline-block;width:260px;"
        "margin:6px;vertical-align:top;border:1px solid #ccc;padding:4px}.c img{max-width:250px}"
        "pre{white-space:pre-wrap}</style></head><body>",
        "<h1>Calibration: wrong decisions</h1>",
        f"<pre>{e(chr(10).join(summary_lines(report)))}</pre>",
    ]
    for title, group in (("Wrong keep / reject", wrong), ("Reject-labelled in the high tier", high)):
        parts.append(f"<h2>{e(title)} ({len(group)})</h2>")
        for r in group:
            q = r.get("quality_score")
            caption = (
                f"{r['source_id']} | label {r['label']} | {r['status']}"
                + (f": {r['reason']} ({r['detail']})" if r["status"] != "kept" else "")
                + (f" | quality {q:.3f}" if q is not None else "")
                + f" | tier {r.get('tier')}"
            )
            parts.append(f"<div class='c'>{_thumb(r['location'])}<div>{e(caption)}</div></div>")
    parts.append("</body></html>")
    return "\n".join(parts)
