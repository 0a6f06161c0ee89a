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

import numpy as np

from groundwork.limits import MAX_PIXELS

from .decode import DEFAULT_MAX_BYTES, DecodeReject, deadline, decode_image, fault
from .dedup import phash64
from .fetch import read_location
from .filters import FilterConfig, Thresholds, check_record, check_size
from .metrics import (
    METRIC_COLUMNS,
    MetricThresholds,
    detail_crop,
    failed_metric,
    gray,
    lettering_copy,
    measure,
    work_copy,
)
from .quality import QualityConfig, quality_score

SCAN_COLUMNS = ("status", "stage", "reason", "detail", "file_bytes", "sha256", *METRIC_COLUMNS,
                "phash", "learned_score", "quality_score", "duplicate_of")  # fmt: skip


@dataclass(frozen=True)
class ScanConfig:
    """The ``[scan]`` config section: the one place for these defaults (ScanSettings reads them)."""

    max_pixels: int = MAX_PIXELS  # decompression-bomb guard, checked on the header before decoding
    max_bytes: int = (
        DEFAULT_MAX_BYTES  # the guard's byte twin: file size checked before reading, reads capped
    )
    max_seconds: float = 60.0  # deadline for one input (read, decode, measure); 0: none
    min_side: int = 256  # shorter side in pixels, after EXIF rotation
    max_aspect: float = 4.0  # long side / short side
    # inputs per scan task and scan part: the unit of parallelism and of resume; 0 = from the input
    # count (32 to 4096, ~64 tasks), so large builds write few big parts
    chunk_size: int = 0


@dataclass(frozen=True)
class ScanSettings:
    """Everything a scan task needs; built once per build by the driver (``make_settings``)."""

    max_pixels: int = ScanConfig.max_pixels
    max_bytes: int = ScanConfig.max_bytes
    max_seconds: float = ScanConfig.max_seconds
    min_side: int = ScanConfig.min_side
    max_aspect: float = ScanConfig.max_aspect
    filters: FilterConfig = field(default_factory=FilterConfig)
    metrics: MetricThresholds = field(default_factory=MetricThresholds)
    quality: QualityConfig = field(default_factory=QualityConfig)
    thresholds: Mapping[str, Thresholds] = field(default_factory=dict)  # per source
    quantiles: Mapping[str, Mapping[str, Sequence[float]]] = field(
        default_factory=dict
    )  # source -> column -> table
    storage: Any = None  # curation.storage.SourceStorage of URL sources (None: AWS_* variables alone)


def reject(row: dict[str, Any], stage: str, reason: str, detail: str) -> dict[str, Any]:
    row.update(status="rejected", stage=stage, reason=reason, detail=detail)
    return row


def scan_row(row: dict[str, Any], settings: ScanSettings) -> tuple[dict[str, Any], np.ndarray | None]:
    """One record row -> its scan row, plus the downscaled pixels of a kept image (for a learned scorer).

    No input can escape as an exception or stall the chunk: over ``max_seconds`` it is ``too_slow``,
    anything unforeseen is ``scan_error``.
    """
    row = dict(row)
    source_reason, source_detail = row.pop("reject_reason", None), row.pop("reject_detail", None)
    row.update({c: None for c in SCAN_COLUMNS})
    row["status"] = "kept"
    if source_reason:
        return reject(row, "metadata", source_reason, source_detail or ""), None
    try:
        with deadline(settings.max_seconds):
            return _scan_input(row, settings)
    except DecodeReject as rej:  # too_slow
        return reject(_clear(row), "decode", rej.reason, rej.detail), None
    except Exception as exc:  # noqa: BLE001 - the scan contract: anything unforeseen on one input is its scan_error reject row, never a lost chunk
        return reject(_clear(row), "decode", "scan_error", fault(exc)), None


def _clear(row: dict[str, Any]) -> dict[str, Any]:
    """Drop half-filled measurements of an input that failed midway."""
    for c in SCAN_COLUMNS:
        if c not in ("file_bytes", "sha256"):
            row[c] = None
    return row


def _scan_input(row: dict[str, Any], settings: ScanSettings) -> tuple[dict[str, Any], np.ndarray | None]:
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
        data = read_location(row["location"], settings.max_bytes, settings.storage)
    except DecodeReject as rej:  # not a regular file, or over max_bytes
        return reject(row, "decode", rej.reason, rej.detail), None
    except OSError as exc:
        return reject(row, "metadata", "missing_file", f"{type(exc).__name__}: {exc}"[:300]), None
    row["file_bytes"] = len(data)
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        img = decode_image(data, settings.max_pixels).rgb
    except DecodeReject as rej:
        return reject(row, "decode", rej.reason, rej.detail), None
    h, w = img.shape[:2]
    row["width"], row["height"] = w, h
    failed = check_size(w, h, min_side=settings.min_side, max_aspect=settings.max_aspect,
                        min_pixels=settings.filters.min_pixels)  # fmt: skip
    if failed:
        return reject(row, "decode", *failed), None
    small = work_copy(img)
    detail = detail_crop(img)  # full resolution: blocking and upscaling vanish in the work copy
    lettering = lettering_copy(img)  # 1024 px: small glyphs averaged into the work copy read grey
    del img
    row.update(measure(small, data, detail, lettering))
    row["phash"] = phash64(gray(small))
    failed = failed_metric(row, settings.metrics, settings.min_side)
    if failed:
        return reject(row, "metric", *failed), None
    return row, small


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
    scan: ScanConfig,
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
        max_pixels=scan.max_pixels,
        max_bytes=scan.max_bytes,
        max_seconds=scan.max_seconds,
        min_side=scan.min_side,
        max_aspect=scan.max_aspect,
        filters=filters,
        metrics=metrics,
        quality=quality,
        thresholds=resolve_thresholds(sources, scores, favs, filters),
        quantiles={s: {"score": score_q[s], "fav_count": fav_q[s]} for s in score_q},
    )
