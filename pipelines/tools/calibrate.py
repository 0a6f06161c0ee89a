"""Measure the keep/reject filters and the quality score on a labelled folder, with the build's own code.

The folder is read by the folder source (``curation.sources.folder``), scanned by
``curation.scan.scan_rows`` with the settings a build makes from the same config, and ranked
into tiers by ``curation.weighting.compute_weights``: what is measured is what a build does.
Labels whose name starts with ``keep`` must be kept, ``reject`` rejected.

With ``folds`` > 1 the one fitted part, the illustration model (``curation.artmodel``), is refitted
k times: each image is then decided by a model that never saw it, and every figure is out of fold.

Learned scorers in the config (``[scorers.*]``) run here too, in this process on CPU, on every image
that decodes, so a refit can re-decide any of them; the report says how many decisions each one
changed (the same images decided again without it). The report gives per-label figures and, per
label, the five most confident wrong decisions, with thumbnails in the HTML sheet.
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
from curation.decode import DecodeReject, decode_image, read_bytes
from curation.metrics import first_crossing
from curation.quality import quality_score
from curation.scan import ScanSettings, scan_row
from curation.sources.folder import iter_folder
from curation.weighting import HIGH, compute_weights, high_tier_eligible

from ..config import BuildConfig
from ..errors import UsageError

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
    from ..build.scan import settings_from_records

    cols = {
        "source": pa.array([r["source"] for r in records], pa.string()),
        "score": pa.array([r.get("score") for r in records], pa.float64()),
        "fav_count": pa.array([r.get("fav_count") for r in records], pa.float64()),
    }
    return settings_from_records(cfg, pa.table(cols))


def scan_labelled(
    images: str, labels: Mapping[str, str], cfg: BuildConfig, scorers: Mapping[str, Any] | None = None
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
    rows, settings = scan_and_decide(chosen, settings, cfg, scorers)
    for row in rows:
        row["label"] = labels[row["source_id"]]
    return rows, settings


def make_scorers(cfg: BuildConfig) -> dict[str, Any]:
    """The configured learned scorers, built here on CPU; bad weights are one UsageError."""
    from curation import scorers

    built = {}
    for spec in cfg.scorers:
        try:
            built[spec.name] = scorers.create(spec.name, weights=spec.weights, device="cpu", **spec.options)
        except (ValueError, OSError) as exc:  # groundwork.checkpoints.WeightsError is a ValueError
            raise UsageError(f"scorer {spec.name!r}: {exc}") from None
    return built


def scan_and_decide(
    records: Sequence[Mapping[str, Any]],
    settings: ScanSettings,
    cfg: BuildConfig,
    scorers: Mapping[str, Any] | None = None,
) -> tuple[list[dict], ScanSettings]:
    """The build's scan of ``records``: measures, the configured scorers on every decoded image, verdicts.

    Every image that decodes is measured and scored (the metric rules are applied afterwards, by
    ``decide``), so a refit or a leave-one-scorer-out pass can re-decide any image from its columns.
    Returns the rows and the settings their verdicts used (the illustration cut deferred to a
    photo classifier when one is configured, as in a build). ``scorers``: built ones (``make_scorers``);
    default: built here from ``cfg``.
    """
    from curation.scorers.apply import defer_illustration, score_images

    scorers = make_scorers(cfg) if scorers is None else scorers
    settings = replace(settings, metrics=defer_illustration(settings.metrics, list(scorers)))
    measure_all = replace(settings, metrics=replace(settings.metrics, enabled=False))
    rows, pixels = [], []
    for record in records:
        row, small = scan_row(record, measure_all)
        rows.append(row)
        if small is not None:
            pixels.append((len(rows) - 1, small))
    score_images(rows, pixels, scorers)
    for row in rows:
        decide(row, settings, scorers, cfg.scoring.fill_tags)
    return rows, settings


def decide(row: dict, settings: ScanSettings, scorers: Mapping[str, Any], fill_tags: bool = True) -> None:
    """One decoded row's verdict from its columns, in a build's order: metric rules, then the scorers.

    Sets status / stage / reason / detail, the quality score and ``confidence``: for a kept image
    its quality score (what its draws will follow), for a rejected one how far past its rule it is
    (a metric's margin relative to its limit, a classifier's probability).
    """
    from curation.scorers.apply import apply_predictions, judge

    if row.get("sharpness") is None or row.get("stage") not in (None, "metric", "scorer"):
        return  # metadata / decode rejects do not depend on any of this
    row.update(status="kept", stage=None, reason=None, detail=None)
    crossed = first_crossing(row, settings.metrics, settings.min_side)
    if crossed is not None:
        row.update(status="rejected", stage="metric", reason=crossed.reason, detail=crossed.detail)
    else:
        apply_predictions(row, settings.filters, fill_tags)
        judge(row, scorers)
    q = quality_score(row, settings.quantiles.get(row.get("source") or "", {}), settings.quality)
    row["quality_score"] = None if math.isnan(q) else q
    if row["status"] == "kept":
        row["confidence"] = row["quality_score"]
    elif crossed is not None:
        row["confidence"] = crossed.margin
    else:
        row["confidence"] = _scorer_confidence(row)


def _scorer_confidence(row: Mapping[str, Any]) -> float | None:
    """The deciding classifier's probability, read back from its detail (``P(x) 0.93 >= 0.5``)."""
    detail = row.get("detail") or ""
    try:
        return float(detail.split(") ", 1)[1].split()[0]) if ") " in detail else None
    except (IndexError, ValueError):
        return None


def _rules_only(settings: ScanSettings) -> ScanSettings:
    return replace(settings, metrics=replace(settings.metrics, min_illustration=0.0))


def residual(rows: Sequence[dict], settings: ScanSettings) -> list[int]:
    """Indices of the decoded rows that every other metric rule lets through: what the model judges."""
    rules = _rules_only(settings)
    return [
        i for i, r in enumerate(rows)
        if r.get("sharpness") is not None and r["stage"] in (None, "metric", "scorer")
        and first_crossing(r, rules.metrics, settings.min_side) is None
    ]  # fmt: skip


def refit_out_of_fold(
    rows: list[dict],
    settings: ScanSettings,
    folds: int,
    seed: int = 0,
    scorers: Mapping[str, Any] | None = None,
    l2: float | None = None,
) -> dict[str, Any]:
    """Re-decide every image with an illustration model fitted without its fold; returns the fit's summary.

    The model is fitted, as shipped, on the images that pass every other rule (the ones it has to
    judge), with label keep = 1, ridge ``l2`` (default: the shipped model's). Rows change in place:
    ``illustration``, status, reason, score.
    """
    index = residual(rows, settings)
    x, have = artmodel.design([rows[i] for i in index])
    index = [index[j] for j in have]
    y = np.array([rows[i]["label"].startswith("keep") for i in index], np.int64)
    if len(np.unique(y)) < 2 or min(np.bincount(y)) < folds:
        raise UsageError(f"--cv {folds}: needs at least {folds} keep and reject images that pass the rules")
    if l2 is None:  # the shipped model's penalty
        l2 = float((artmodel.load_model() or {}).get("l2", 1.0))
    p = artmodel.cross_val_predict(x, y, folds, seed=seed, l2=l2)
    for i, prob in zip(index, p, strict=True):
        rows[i]["illustration"] = float(prob)
    for row in rows:
        decide(row, settings, scorers or {})
    return {
        "folds": folds,
        "seed": seed,
        "fitted_on": len(y),
        "keeps": int(y.sum()),
        "rejects": int(len(y) - y.sum()),
    }


def fit_model(rows: Sequence[dict], settings: ScanSettings, l2: float, source: str) -> dict[str, Any]:
    """The illustration model fitted on every labelled image that passes the other rules.

    ``fitted_on`` names the data and lists the images (file, label), so the shipped JSON says
    exactly what it learned from.
    """
    chosen = [rows[i] for i in residual(rows, settings)]
    x, have = artmodel.design(chosen)
    used = [chosen[j] for j in have]
    y = np.array([r["label"].startswith("keep") for r in used], np.int64)
    model = artmodel.fit(x, y, l2)
    model["fitted_on"] = {
        "data": source,
        "images": len(y),
        "keeps": int(y.sum()),
        "rejects": int(len(y) - y.sum()),
        "files": sorted([r["source_id"], r["label"]] for r in used),
    }
    return model


def cross_validated(
    rows: Sequence[dict],
    settings: ScanSettings,
    cfg: BuildConfig,
    folds: int = 5,
    seeds: int = 10,
    l2: float | None = None,
    scorers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole decision chain out of fold over ``seeds`` fold seeds: mean and range of each figure,
    and per label the mean recall and its range (what ``artmodel.json``, the bench and ``calibrate
    --cv`` record). One split of 151 images moves a recall by a whole image (0.012-0.015)."""
    import copy

    runs = []
    for seed in range(seeds):
        trial = copy.deepcopy(list(rows))
        refit_out_of_fold(trial, settings, folds, seed, scorers, l2=l2)
        tiers_of(trial, cfg)
        runs.append(summarise(trial))

    def spread(values: Sequence[float]) -> dict[str, float]:
        return {"mean": round(float(np.mean(values)), 4), "min": round(float(np.min(values)), 4),
                "max": round(float(np.max(values)), 4)}  # fmt: skip

    figures = {k: spread([r[k] for r in runs]) for k in ("keep_recall", "reject_recall", "quality_auc",
                                                          "high_tier_reject_share")}  # fmt: skip
    figures["per_label_recall"] = {
        label: spread([r["labels"][label]["recall"] for r in runs]) for label in runs[0]["labels"]
    }
    figures["high_tier_rejects"] = sorted({f for r in runs for f in r["high_tier_rejects"]})
    figures["synthetic_kept"] = sorted(
        {f for r in runs for f in r["kept_rejects"] if f.startswith("synthetic_")}
    )
    figures["how"] = f"{folds}-fold, fold seeds 0-{seeds - 1}, whole decision chain on all {len(rows)} images"
    return figures


def scorer_changes(rows: Sequence[dict], settings: ScanSettings, cfg: BuildConfig,
                   scorers: Mapping[str, Any]) -> dict[str, dict[str, int]]:  # fmt: skip
    """Per scorer: how many images get another keep/reject verdict, or another tier, without it.

    Each scorer is left out in turn (its columns kept, its verdicts and its deferral of the
    illustration cut gone, its quality component dropped) and every image is decided again.
    """
    import copy

    from curation.scorers.apply import defer_illustration

    base = {r["source_id"]: (r["status"], r.get("tier")) for r in rows}
    undeferred = replace(settings.metrics, min_illustration=cfg.metrics.min_illustration)
    out = {}
    for name in scorers:
        others = {n: s for n, s in scorers.items() if n != name}
        trial = copy.deepcopy(list(rows))
        columns = getattr(scorers[name], "columns", ())
        for r in trial:  # without its columns: no quality component, no rating, no verdict
            for c in columns:
                r[c] = None
        without = replace(settings, metrics=defer_illustration(undeferred, list(others)))
        for r in trial:
            decide(r, without, others, cfg.scoring.fill_tags)
        tiers_of(trial, cfg)
        verdicts = sum(base[r["source_id"]][0] != r["status"] for r in trial)
        tiers = sum(base[r["source_id"]][1] != r.get("tier") and r["status"] == "kept" == base[r["source_id"]][0]
                    for r in trial)  # fmt: skip
        out[name] = {"verdicts": int(verdicts), "tiers": int(tiers)}
    return out


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


WRONG_SHOWN = 5  # most confident wrong decisions per label in the report and the sheet


def most_confident_wrong(rows: Sequence[dict], label: str, n: int = WRONG_SHOWN) -> list[dict]:
    """The ``n`` wrong decisions on ``label`` that the pipeline was surest of (``confidence``, highest first)."""
    wrong = [r for r in rows if r["label"] == label and (r["status"] == "kept") != label.startswith("keep")]
    return sorted(wrong, key=lambda r: (-(r.get("confidence") or 0.0), r["source_id"]))[:n]


def summarise(rows: Sequence[dict]) -> dict[str, Any]:
    """Per label kept / rejected with reasons, its recall and its most confident wrong decisions;
    recalls; AUC of the quality score; the high tier's rejects."""
    per_label: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = per_label.setdefault(r["label"], {"n": 0, "kept": 0, "rejected": 0, "reasons": Counter()})
        entry["n"] += 1
        if r["status"] == "kept":
            entry["kept"] += 1
        else:
            entry["rejected"] += 1
            entry["reasons"][r["reason"]] += 1
    for label, entry in per_label.items():
        entry["reasons"] = dict(sorted(entry["reasons"].items()))
        entry["recall"] = (entry["kept"] if label.startswith("keep") else entry["rejected"]) / entry["n"]
        entry["most_confident_wrong"] = [
            {"file": r["source_id"], "decision": r["status"] if r["status"] == "kept" else r["reason"],
             "detail": r.get("detail"), "confidence": r.get("confidence"), "tier": r.get("tier")}
            for r in most_confident_wrong(rows, label)
        ]  # fmt: skip
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
    images: str, labels_path: str, cfg: BuildConfig, folds: int = 0, seed: int = 0, repeats: int = 10
) -> tuple[dict[str, Any], list[dict]]:
    """The report and the rows (scan columns + label + tier) of one labelled folder.

    With ``folds`` > 1 every image is decided out of fold at fold seed ``seed``, and the figures are
    repeated over fold seeds 0 .. ``repeats`` - 1 (``fold_seeds``: mean and range), since one split
    moves a recall by a whole image."""
    labels = read_labels(labels_path)
    if not labels:
        raise UsageError(f"{labels_path}: no labelled files")
    scorers = make_scorers(cfg)
    rows, settings = scan_labelled(images, labels, cfg, scorers)
    repeated = None
    if folds > 1 and repeats > 1:
        repeated = cross_validated(rows, settings, cfg, folds, repeats, scorers=scorers)
    cv = refit_out_of_fold(rows, settings, folds, seed, scorers) if folds > 1 else None
    tiers_of(rows, cfg)
    report = summarise(rows)
    report["cross_validation"] = cv or "off: the shipped illustration model decides (fitted, not out of fold)"
    if repeated is not None:
        report["fold_seeds"] = repeated
    if scorers:
        report["scorer_changes"] = scorer_changes(rows, settings, cfg, scorers)
    return report, rows


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    lines = [f"{'label':<22} {'n':>4} {'kept':>5} {'rej':>5} {'recall':>6}  reasons"]
    for label, e in report["labels"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in e["reasons"].items())
        lines.append(
            f"{label:<22} {e['n']:>4} {e['kept']:>5} {e['rejected']:>5} {e['recall']:>6.3f}  {reasons}"
        )
    lines += [
        f"keep recall {report['keep_recall']:.3f}, reject recall {report['reject_recall']:.3f}",
        f"quality score ROC AUC (keeps above rejects) {report['quality_auc']:.3f}",
        f"high tier: {report['high_tier']} samples, {len(report['high_tier_rejects'])} reject-labelled "
        f"({report['high_tier_reject_share']:.1%})",
        f"cross-validation: {report['cross_validation']}",
    ]
    if "fold_seeds" in report:
        f = report["fold_seeds"]

        def spread(k: str) -> str:
            return f"{f[k]['mean']:.3f} ({f[k]['min']:.3f}-{f[k]['max']:.3f})"

        rejects = ", ".join(f["high_tier_rejects"]) or "none"
        lines.append(
            f"{f['how']}: keep recall {spread('keep_recall')}, reject recall "
            f"{spread('reject_recall')}, AUC {spread('quality_auc')}; reject-labelled in the high tier: {rejects}"
        )
    for name, changed in report.get("scorer_changes", {}).items():
        lines.append(
            f"scorer {name}: changed {changed['verdicts']} keep/reject verdict(s) and {changed['tiers']} tier(s)"
        )
    for label, e in report["labels"].items():
        for w in e["most_confident_wrong"]:
            conf = "" if w["confidence"] is None else f" (confidence {w['confidence']:.2f})"
            lines.append(f"  wrong {label}: {w['file']} -> {w['decision']}{conf}")
    return lines


def _thumb(path: str, height: int = 128) -> str:
    """An inline JPEG thumbnail decoded by the build's own decoder (every format a build reads)."""
    try:
        rgb = decode_image(read_bytes(path)).rgb
    except (DecodeReject, OSError):  # not an image the build reads: no picture, the row still lists it
        return ""
    scale = height / rgb.shape[0]
    small = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    return (
        f'<img alt="" src="data:image/jpeg;base64,{base64.b64encode(buf.tobytes()).decode()}">' if ok else ""
    )


def _caption(r: Mapping[str, Any]) -> str:
    q, c = r.get("quality_score"), r.get("confidence")
    return (
        f"{r['source_id']} | label {r['label']} | {r['status']}"
        + (f": {r['reason']} ({r['detail']})" if r["status"] != "kept" else "")
        + (f" | quality {q:.3f}" if q is not None else "")
        + (f" | confidence {c:.2f}" if c is not None else "")
        + f" | tier {r.get('tier')}"
    )


def contact_sheet(report: Mapping[str, Any], rows: Sequence[dict]) -> str:
    """Self-contained HTML: per label its figures and its five most confident wrong decisions with
    thumbnails; the reject-labelled images in the high tier; every wrong decision listed (all escaped)."""
    e = html.escape
    wrong = [r for r in rows if (r["status"] == "kept") != r["label"].startswith("keep")]
    high = [r for r in rows if r.get("tier") == HIGH and r["label"].startswith("reject")]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>linepairs calibrate</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:20px}.c{display:inline-block;width:260px;"
        "margin:6px;vertical-align:top;border:1px solid #ccc;padding:4px}.c img{max-width:250px}"
        "pre{white-space:pre-wrap}td,th{padding:2px 8px;text-align:left}</style></head><body>",
        "<h1>Calibration</h1>",
        f"<pre>{e(chr(10).join(summary_lines(report)))}</pre>",
    ]
    for label, entry in report["labels"].items():
        shown = most_confident_wrong(rows, label)
        parts.append(
            f"<h2>{e(label)}: {entry['n']} images, recall {entry['recall']:.3f}; "
            f"most confident wrong decisions ({len(shown)})</h2>"
        )
        parts += [f"<div class='c'>{_thumb(r['location'])}<div>{e(_caption(r))}</div></div>" for r in shown]
    parts.append(f"<h2>Reject-labelled in the high tier ({len(high)})</h2>")
    parts += [f"<div class='c'>{_thumb(r['location'])}<div>{e(_caption(r))}</div></div>" for r in high]
    parts.append(f"<h2>Every wrong decision ({len(wrong)})</h2><table><tr><th>file</th><th>label</th>"
                 "<th>decision</th><th>detail</th></tr>")  # fmt: skip
    for r in sorted(wrong, key=lambda r: (r["label"], r["source_id"])):
        decision = "kept" if r["status"] == "kept" else r["reason"]
        parts.append(f"<tr><td>{e(r['source_id'])}</td><td>{e(r['label'])}</td><td>{e(str(decision))}</td>"
                     f"<td>{e(str(r.get('detail') or ''))}</td></tr>")  # fmt: skip
    parts.append("</table></body></html>")
    return "\n".join(parts)
