"""Pixel metrics of one image: pure functions over arrays (NumPy/OpenCV), each a scan column.

Every metric runs on a downscaled copy (``work_copy``), so its cost is bounded whatever the
image size and its value does not depend on the resolution the file happened to be saved at.
The thresholds that turn a metric into a reject live in ``MetricThresholds`` (``[metrics]``);
docs/curation.md gives the corpus distributions they were chosen from.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .configtable import from_table

WORK_SIDE = 512  # long side of the copy every metric is measured on

METRIC_COLUMNS = (
    "chroma_p95",  # 95th percentile of Lab chroma; greyscale art is ~0
    "hue_spread",  # share of coloured pixels > 60 degrees off the dominant hue; ~0 = a single tint
    "colorfulness",  # Hasler & Suesstrunk (2003) M
    "sharpness",  # variance of the Laplacian of the grey work copy
    "jpeg_quality",  # 1..100 estimated from the luminance quantisation table; NaN for non-JPEG
    "border_fraction",  # share of the area in solid rows/columns at the edges (letterbox)
    "intensity_std",  # std of grey levels; a blank or flat image is ~0
    "entropy",  # Shannon entropy of the grey histogram, bits (0..8)
    "text_density",  # share of the area covered by text-line-like blobs
)


def work_copy(rgb: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Downscale (never upscale) so that the long side is at most ``side``; INTER_AREA averages."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def chroma_stats(rgb: np.ndarray, chromatic: float = 8.0) -> tuple[float, float]:
    """(95th percentile of chroma, hue spread) in CIELab (OpenCV's 8-bit scaling, a/b offset 128).

    Hue spread: share of the chromatic pixels (chroma > ``chromatic``) whose hue lies more than 60
    degrees from their chroma-weighted mean hue. A tinted line drawing (brown or blue ink) has one
    hue: spread ~0; colour art always has skin against hair, clothes or sky: spread > 0.01.
    """
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    a = lab[..., 1] - 128.0
    b = lab[..., 2] - 128.0
    chroma = np.hypot(a, b)
    p95 = float(np.percentile(chroma, 95))
    mask = chroma > chromatic
    if mask.mean() < 0.002:  # too few coloured pixels to speak of a hue
        return p95, 0.0
    am, bm = a[mask], b[mask]
    mean = math.atan2(float(bm.sum()), float(am.sum()))
    diff = np.abs((np.arctan2(bm, am) - mean + np.pi) % (2 * np.pi) - np.pi)
    return p95, float((diff > math.radians(60)).mean())


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk's M: sigma_rgyb + 0.3 * mu_rgyb over rg = R - G, yb = (R + G) / 2 - B."""
    f = rgb.astype(np.float32)
    rg = f[..., 0] - f[..., 1]
    yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    sigma = math.hypot(float(rg.std()), float(yb.std()))
    mu = math.hypot(float(rg.mean()), float(yb.mean()))
    return sigma + 0.3 * mu


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian; measured on the work copy, so comparable across image sizes."""
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=3).var())


# IJG (libjpeg) standard luminance table, the one every quality setting scales.
_STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def jpeg_quality_from_table(table: np.ndarray) -> float:
    """Invert libjpeg's scaling: table = (std * S + 50) // 100, S = 5000/q (q < 50) or 200 - 2q.

    PIL returns tables in the same (zigzag) order for the standard and the file's table, so
    the mean ratio compares like with like; tables that are not scaled IJG tables still get a
    monotone estimate (finer quantisation -> higher quality).
    """
    ratio = float(np.mean(np.asarray(table, dtype=np.float64)[:64] * 100.0 / _STD_LUMA))
    if ratio <= 0:
        return 100.0
    quality = (200.0 - ratio) / 2.0 if ratio <= 100.0 else 5000.0 / ratio
    return float(min(100.0, max(1.0, quality)))


def jpeg_quality(data: bytes) -> float:
    """Estimated JPEG quality from the header's quantisation tables; NaN when not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return math.nan
    try:
        with Image.open(io.BytesIO(data)) as im:
            tables = getattr(im, "quantization", None) or {}
    except Exception:
        return math.nan
    if 0 not in tables:
        return math.nan
    # PIL orders the table in zigzag; the standard above is row-major -> compare both ways, keep the
    # closer (a scaled standard table gives ~the same ratio at every coefficient in its own order).
    return jpeg_quality_from_table(_row_major(tables[0]))


_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
     21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60,
     61, 54, 47, 55, 62, 63],
    dtype=np.int64,
)  # fmt: skip


def _row_major(table: Any) -> np.ndarray:
    values = np.asarray(list(table)[:64], dtype=np.float64)
    if len(values) < 64:
        return np.pad(values, (0, 64 - len(values)), constant_values=values.mean() if len(values) else 1)
    # Pillow >= 8 returns the tables in natural (row-major) order; check which order fits the standard best.
    natural = values
    unzig = np.empty(64)
    unzig[_ZIGZAG] = values
    err_n = np.std(natural / _STD_LUMA)
    err_z = np.std(unzig / _STD_LUMA)
    return natural if err_n <= err_z else unzig


def border_fraction(grey: np.ndarray, tol: float = 3.0) -> float:
    """Share of the area in solid bars at the edges: rows/columns of one flat colour, from each side.

    A row counts as solid when its std is under ``tol`` and its mean is within ``tol`` of the edge row's
    mean (so a gradient sky does not count; a black or white letterbox does).
    """
    g = grey.astype(np.float32)
    h, w = g.shape

    def run(lines_mean: np.ndarray, lines_std: np.ndarray) -> int:
        solid = (lines_std < tol) & (np.abs(lines_mean - lines_mean[0]) < tol)
        if not solid[0]:
            return 0
        stop = np.flatnonzero(~solid)
        return int(stop[0]) if len(stop) else len(solid)

    rm, rs = g.mean(axis=1), g.std(axis=1)
    cm, cs = g.mean(axis=0), g.std(axis=0)
    top = run(rm, rs)
    bottom = run(rm[::-1], rs[::-1])
    left = run(cm, cs)
    right = run(cm[::-1], cs[::-1])
    rows = min(h, top + bottom)
    cols = min(w, left + right)
    covered = rows * w + cols * h - rows * cols
    return float(covered / (h * w))


def entropy(grey: np.ndarray) -> float:
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def text_density(grey: np.ndarray) -> float:
    """Share of the area in text-line-like blobs: rows of small dark strokes on a light, flat ground.

    Lettering (speech bubbles, captions, text pages) is many short high-contrast strokes packed in
    lines. A morphological black-hat finds small dark strokes; a closing along the line direction
    (horizontal, and separately vertical for Japanese text) merges a line's glyphs into one blob;
    blobs count when they are line-shaped, text-sized and half filled with strokes.
    """
    h, w = grey.shape
    unit = max(3, round(max(h, w) / 128))  # glyph scale relative to the work copy
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * unit + 1, 2 * unit + 1))
    strokes = (cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, k) > 60).astype(np.uint8)
    # A light local background is what separates lettering from hair or clothing detail.
    light = cv2.blur((grey > 200).astype(np.float32), (4 * unit + 1, 4 * unit + 1)) > 0.5
    strokes &= light.astype(np.uint8)
    best = 0.0
    for kw, kh in ((2 * unit, 1), (1, 2 * unit)):
        merged = cv2.morphologyEx(
            strokes, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kw, kh))
        )
        n, _, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
        if n <= 1:
            continue
        bw, bh, area = (stats[1:, i] for i in (cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA))
        along, across = (bw, bh) if kw > kh else (bh, bw)
        line_like = (
            (across >= unit // 2) & (across <= 5 * unit) & (along >= 4 * across) & (area >= 0.3 * bw * bh)
        )
        best = max(best, float((bw[line_like] * bh[line_like]).sum() / (h * w)))
    return best


def measure(rgb: np.ndarray, data: bytes | None = None) -> dict[str, float]:
    """Every metric of one decoded image (``data``: the file bytes, for the JPEG tables)."""
    small = work_copy(rgb)
    g = gray(small)
    chroma, spread = chroma_stats(small)
    return {
        "chroma_p95": chroma,
        "hue_spread": spread,
        "colorfulness": colorfulness(small),
        "sharpness": sharpness(g),
        "jpeg_quality": jpeg_quality(data) if data is not None else math.nan,
        "border_fraction": border_fraction(g),
        "intensity_std": float(g.std()),
        "entropy": entropy(g),
        "text_density": text_density(g),
    }


@dataclass(frozen=True)
class MetricThresholds:
    """``[metrics]``: a sample is rejected (stage ``metric``) when a metric crosses its limit.

    Defaults come from the shared corpus distributions (docs/curation.md); 0 or a negative value
    turns a ``min_`` check off, a value >= the metric's maximum turns a ``max_`` check off.
    """

    # Each default sits outside the range of the 41 colour illustrations of ../shared/corpus and inside
    # the range of what it is meant to catch; docs/curation.md has the measured distributions.
    min_chroma_p95: float = 5.0  # greyscale: corpus colour art >= 7.6, untinted line drawings <= 4.2
    min_hue_spread: float = 0.005  # single-tint art: colour art >= 0.012, tinted line drawings <= 0.002
    min_colorfulness: float = 0.0  # off: feeds the quality score; chroma/hue already catch grey art
    min_sharpness: float = 100.0  # corpus >= 1804; a 512px image blurred with sigma 3 gives 12..60
    min_jpeg_quality: float = 40.0  # corpus JPEGs estimate 50..98.5; below 40 blocking shows in the lines
    max_border_fraction: float = 0.5  # white backgrounds reaching the edges give up to 0.36 on the corpus
    min_intensity_std: float = 10.0  # blank / flat fills; corpus colour art >= 24
    min_entropy: float = 2.0  # corpus colour art >= 3.67 bits
    max_text_density: float = 0.02  # corpus <= 0.010; three speech bubbles of text give ~0.027
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricThresholds:
        return from_table(cls, data, "metrics")


def failed_metric(values: dict[str, float], t: MetricThresholds) -> tuple[str, str] | None:
    """(reason, detail) of the first threshold crossed, in a fixed order; None when all pass."""
    if not t.enabled:
        return None
    checks = (
        ("chroma_p95", t.min_chroma_p95, "min", "greyscale"),
        ("hue_spread", t.min_hue_spread, "min", "monochrome"),
        ("intensity_std", t.min_intensity_std, "min", "blank"),
        ("entropy", t.min_entropy, "min", "low_entropy"),
        ("colorfulness", t.min_colorfulness, "min", "low_colorfulness"),
        ("sharpness", t.min_sharpness, "min", "blurry"),
        ("jpeg_quality", t.min_jpeg_quality, "min", "low_jpeg_quality"),
        ("border_fraction", t.max_border_fraction, "max", "letterboxed"),
        ("text_density", t.max_text_density, "max", "text_heavy"),
    )
    for column, limit, kind, reason in checks:
        value = values.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if kind == "min" and limit > 0 and value < limit:
            return reason, f"{column} {value:.3g} < {limit:g}"
        if kind == "max" and value > limit:
            return reason, f"{column} {value:.3g} > {limit:g}"
    return None
