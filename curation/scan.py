"""Scan inputs: metadata filters -> read -> decode -> size checks -> pixel metrics + hash -> quality. No Ray.

Every row leaves with ``status`` kept/rejected and, when rejected, the ``stage`` and ``reason``
(``curation.records.REJECT_REASONS``) of the first check it failed. Metrics are filled for every
image that decoded, rejected by a metric or not, so thresholds can be re-tuned from the scan table.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .decode import DecodeReject, decode_for_metrics, read_location
from .dedup import phash64
from .filters import FilterConfig, Thresholds, check_record, check_size
from .metrics import METRIC_COLUMNS, WORK_SIDE, MetricThresholds, failed_metric, gray, measure, work_copy
from .quality import QualityConfig, quality_score

SCAN_COLUMNS = ("status", "stage", "reason", "detail", "file_bytes", "sha256", *METRIC_COLUMNS,
                "phash", "learned_score", "quality_score", "duplicate_of")  # fmt: skip


@dataclass(frozen=True)
class ScanSettings:
    """Everything a scan task needs; built once per build by the driver (``settings_from``)."""

    max_pixels: int = 64_000_000
    min_side: int = 256
    max_aspect: float = 4.0
    filters: FilterConfig = field(default_factory=FilterConfig)
    metrics: MetricThresholds = field(default_factory=MetricThresholds)
    quality: QualityConfig = field(default_factory=QualityConfig)
    thresholds: Mapping[str, Thresholds] = field(default_factory=dict)  # per source
    quantiles: Mapping[str, Mapping[str, Sequence[float]]] = field(
        default_factory=dict
    )  # source -> column -> table


def reject(row: dict[str, Any], stage: str, reason: str, detail: str) -> dict[str, Any]:
    row.update(status="rejected", stage=stage, reason=reason, detail=detail)
    return row


def scan_row(row: dict[str, Any], settings: ScanSettings) -> tuple[dict[str, Any], np.ndarray | None]:
    """One record row -> its scan row, plus the downscaled pixels of a kept image (for a learned scorer)."""
    row = dict(row)
    row.update({c: None for c in SCAN_COLUMNS})
    row["status"] = "kept"
    if row.get("reject_reason"):
        return reject(row, "metadata", row["reject_reason"], row.get("reject_detail") or ""), None
    source = row.get("source") or ""
    failed = check_record(
        row, settings.filters, settings.thresholds.get(source, Thresholds()),
        min_side=settings.min_side, max_aspect=settings.max_aspect,
    )  # fmt: skip
    if failed:
        return reject(row, "metadata", *failed), None
    if not row.get("location"):
        return reject(row, "metadata", "missing_file", "the record has no image location"), None
    try:
        data = read_location(row["location"])
    except OSError as exc:
        return reject(row, "metadata", "missing_file", f"{type(exc).__name__}: {exc}"[:300]), None
    row["file_bytes"] = len(data)
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        # Large JPEGs decode in draft mode (DCT scaling) to >= 2 x the metrics' work size: a
        # fraction of the cost, same verdict on truncated files (curation/decode.py).
        img, (w, h) = decode_for_metrics(data, settings.max_pixels, 2 * WORK_SIDE)
    except DecodeReject as rej:
        return reject(row, "decode", rej.reason, rej.detail), None
    row["width"], row["height"] = w, h
    failed = check_size(w, h, min_side=settings.min_side, max_aspect=settings.max_aspect,
                        min_pixels=settings.filters.min_pixels)  # fmt: skip
    if failed:
        return reject(row, "decode", *failed), None
    small = _work_copy(img, w, h)
    del img
    row.update(measure(small, data))
    row["phash"] = phash64(gray(small))
    failed = failed_metric(row, settings.metrics)
    if failed:
        return reject(row, "metric", *failed), None
    return row, small


def _work_copy(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``work_copy`` of the full-size image, from ``img`` (the full image or its draft decode)."""
    if img.shape[:2] == (h, w):
        return work_copy(img)
    scale = WORK_SIDE / max(w, h)  # the size work_copy gives the full image
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def finish_quality(row: dict[str, Any], settings: ScanSettings) -> None:
    score = quality_score(row, settings.quantiles.get(row.get("source") or "", {}), settings.quality)
    row["quality_score"] = None if math.isnan(score) else score


def scan_rows(
    records: Sequence[dict[str, Any]], settings: ScanSettings, scorer: Any = None
) -> list[dict[str, Any]]:
    """Scan a chunk; a learned ``scorer`` (images -> scores) sees the kept images in one batched call."""
    rows, pixels = [], []
    for record in records:
        row, small = scan_row(record, settings)
        rows.append(row)
        if small is not None and scorer is not None:
            pixels.append((len(rows) - 1, small))
    if pixels:
        scores = scorer([p for _, p in pixels])
        for (i, _), s in zip(pixels, scores, strict=True):
            rows[i]["learned_score"] = float(s)
    for row in rows:
        if row.get("sharpness") is not None:  # every image that decoded gets a score, kept or not
            finish_quality(row, settings)
    return rows


def make_settings(
    *,
    max_pixels: int,
    min_side: int,
    max_aspect: float,
    filters: FilterConfig,
    metrics: MetricThresholds,
    quality: QualityConfig,
    sources: Sequence[str],
    scores: np.ndarray,
    favs: np.ndarray,
) -> ScanSettings:
    """Settings for every scan task, with the per-source cuts and quantile tables of this build's records."""
    from .filters import resolve_thresholds
    from .quality import source_quantiles

    score_q = source_quantiles(sources, scores)
    fav_q = source_quantiles(sources, favs)
    return ScanSettings(
        max_pixels=max_pixels,
        min_side=min_side,
        max_aspect=max_aspect,
        filters=filters,
        metrics=metrics,
        quality=quality,
        thresholds=resolve_thresholds(sources, scores, favs, filters),
        quantiles={s: {"score": score_q[s], "fav_count": fav_q[s]} for s in score_q},
    )
