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
DETAIL_SIDE = 512  # side of the full-resolution centre crop for blocking, noise and upscaling

METRIC_COLUMNS = (
    "chroma_p95",  # 95th percentile of Lab chroma of the content; greyscale art is ~0
    "hue_spread",  # share of coloured content pixels > 60 degrees off the dominant hue; ~0 = a single tint
    "saturation",  # mean HSV saturation (0..255) of the content; a weak tint (sepia pencil) is low
    "colorfulness",  # Hasler & Suesstrunk (2003) M of the content
    "sharpness",  # variance of the Laplacian of the median-filtered grey work copy (noise does not count)
    "jpeg_quality",  # 1..100 estimated from the luminance quantisation table; NaN for non-JPEG
    "blockiness",  # gradient on the 8x8 grid / gradient elsewhere, full resolution; ~1 = no JPEG blocks
    "noise",  # grain in the flattest quarter of the picture (mean |x - median3|, grey levels)
    "upscale",  # estimated upscale factor from the spectrum's fall-off (1 = detail up to Nyquist)
    "background",  # share of the area in a plain background reaching the edges (white, transparent, flat)
    "border_fraction",  # letterbox: share of the area in uniform bars with a hard edge on opposite sides
    "intensity_std",  # std of grey levels of the content; a blank or flat image is ~0
    "entropy",  # Shannon entropy of the content's grey histogram, bits (0..8)
    "text_density",  # share of the area covered by text-line-like blobs
    "straight_lines",  # share of edges on long horizontal/vertical runs: panel borders, UI boxes
    "flat_share",  # share of content pixels with ~no gradient: drawn art has flat fills, photos grain
    "line_share",  # share of content pixels on thin dark strokes (line art)
    "colour_count",  # distinct 18-bit (6 bits a channel) colours / content pixels: photos, GAN texture high
    "illustration",  # P(drawn illustration) from the classical features (curation/artmodel.py)
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


def plain_background(rgb: np.ndarray, tol: int = 10) -> np.ndarray:
    """Mask of a plain background: pixels within ``tol`` of the edge's dominant colour, connected to the edge.

    Transparent pixels were flattened onto white by the decoder, so a transparent background, a
    white page and a flat painted backdrop all come out here; none of them is content to measure.
    Empty when under 30 % of the edge pixels share one colour (a scene runs off every edge).
    """
    h, w = rgb.shape[:2]
    edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    q = edge // 8
    keys = q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    if counts.max() < 0.3 * len(keys):
        return np.zeros((h, w), bool)
    colour = np.median(edge[keys == values[counts.argmax()]], axis=0)
    near = (np.abs(rgb.astype(np.int16) - colour).max(axis=2) <= tol).astype(np.uint8)
    _, labels = cv2.connectedComponents(near, connectivity=4)
    touching = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, touching[touching > 0])


def content_mask(rgb: np.ndarray) -> np.ndarray:
    """Everything but the plain background; the whole image when the background would leave < 1 %."""
    mask = ~plain_background(rgb)
    return mask if mask.mean() >= 0.01 else np.ones(mask.shape, bool)


def chroma_stats(
    rgb: np.ndarray, mask: np.ndarray | None = None, chromatic: float = 8.0
) -> tuple[float, float]:
    """(95th percentile of chroma, hue spread) in CIELab (OpenCV's 8-bit scaling, a/b offset 128).

    Hue spread: share of the chromatic pixels (chroma > ``chromatic``) whose hue lies more than 60
    degrees from their chroma-weighted mean hue. A tinted line drawing (brown or blue ink) has one
    hue: spread ~0; colour art always has skin against hair, clothes or sky: spread > 0.01.
    Measured on ``mask`` (the content) when given.
    """
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    a = lab[..., 1].astype(np.float32) - 128.0
    b = lab[..., 2].astype(np.float32) - 128.0
    if mask is not None:
        a, b = a[mask], b[mask]
    chroma = cv2.magnitude(a, b).ravel()
    # 95th percentile by selection (np.partition), not a full sort
    k = min(len(chroma) - 1, int(round(0.95 * (len(chroma) - 1))))
    p95 = float(np.partition(chroma, k)[k]) if len(chroma) else 0.0
    coloured = chroma > chromatic
    if coloured.mean() < 0.002:  # too few coloured pixels to speak of a hue
        return p95, 0.0
    am, bm = a.ravel()[coloured], b.ravel()[coloured]
    mean = math.atan2(float(bm.sum()), float(am.sum()))
    # angle to the mean hue via the dot product: no per-pixel arctan
    cos = (am * math.cos(mean) + bm * math.sin(mean)) / chroma[coloured]
    return p95, float((cos < math.cos(math.radians(60))).mean())


def saturation(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean HSV saturation (0..255) of the content: pastel art ~40+, a sepia pencil drawing < 20."""
    s = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    return float((s[mask] if mask is not None else s).mean())


def colorfulness(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Hasler & Suesstrunk's M: sigma_rgyb + 0.3 * mu_rgyb over rg = R - G, yb = (R + G) / 2 - B."""
    f = (rgb[mask] if mask is not None else rgb.reshape(-1, 3)).astype(np.float32)
    rg = f[:, 0] - f[:, 1]
    yb = 0.5 * (f[:, 0] + f[:, 1]) - f[:, 2]
    sigma = math.hypot(float(rg.std()), float(yb.std()))
    mu = math.hypot(float(rg.mean()), float(yb.mean()))
    return sigma + 0.3 * mu


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian after a 3x3 median: edges count, isolated grain does not.

    Measured on the work copy, so comparable across image sizes.
    """
    return float(cv2.Laplacian(cv2.medianBlur(grey, 3), cv2.CV_32F, ksize=3).var())


def blockiness(detail: np.ndarray) -> float:
    """Mean |gradient| across the 8x8 JPEG grid / mean |gradient| elsewhere, at full resolution.

    ~1 for clean images; JPEG blocking makes every 8th step larger (q10: ~1.8, q5: ~3.8). The
    crop is taken at a multiple of 8 from the origin, so the grid lines up with the encoder's.
    """
    f = detail.astype(np.float32)
    if min(f.shape) < 16:
        return 1.0

    def ratio(d: np.ndarray) -> float:
        idx = np.arange(len(d)) % 8 == 7
        return float((d[idx].mean() + 0.5) / (d[~idx].mean() + 0.5))

    dh = np.abs(np.diff(f, axis=1)).mean(axis=0)
    dv = np.abs(np.diff(f, axis=0)).mean(axis=1)
    return 0.5 * (ratio(dh) + ratio(dv))


def noise(grey: np.ndarray, mask: np.ndarray | None = None, block: int = 8) -> float:
    """Grain where the picture is flattest: mean |x - median3(x)| over the smoothest quarter of blocks.

    A drawn illustration has flat fills, so its flattest quarter has no residual (< 1); sensor
    grain, dithering and random noise leave one everywhere (uniform RGB noise: ~17). Only blocks
    wholly inside ``mask`` (the content) count: a transparent background is flat by construction.
    """
    h, w = (grey.shape[0] // block) * block, (grey.shape[1] // block) * block
    if h == 0 or w == 0:
        return 0.0
    g = grey[:h, :w]
    res = np.abs(g.astype(np.float32) - cv2.medianBlur(g, 3).astype(np.float32))
    shape = (h // block, block, w // block, block)
    spread = g.astype(np.float32).reshape(shape).std(axis=(1, 3)).ravel()
    grain = res.reshape(shape).mean(axis=(1, 3)).ravel()
    if mask is not None:
        inside = mask[:h, :w].reshape(shape).all(axis=(1, 3)).ravel()
        if inside.sum() >= 4:
            spread, grain = spread[inside], grain[inside]
    flattest = np.argsort(spread, kind="stable")[: max(1, len(spread) // 4)]
    return float(np.median(grain[flattest]))


def upscale_factor(detail: np.ndarray) -> float:
    """How many times larger the image is than the detail it holds, from the power spectrum's fall-off.

    The radius (as a share of Nyquist) within which 99.9 % of the windowed spectrum's energy lies
    is where real detail ends; an image upscaled k times has nothing beyond 1/k of Nyquist. Returns
    1 / that radius, clipped to [1, 8]. A soft (painted, blurred) image reads as mildly upscaled,
    which is what it is for a training pair.
    """
    f = detail.astype(np.float32)
    n = min(f.shape)
    if n < 32:
        return 1.0
    f = f[:n, :n]
    win = np.hanning(n).astype(np.float32)
    power = np.abs(np.fft.rfft2((f - f.mean()) * np.outer(win, win))) ** 2
    fy = np.abs(np.fft.fftfreq(n))[:, None] * 2
    fx = np.fft.rfftfreq(n)[None, :] * 2
    radius = np.maximum(fy, fx).ravel()  # Chebyshev radius: the grid's own Nyquist square
    order = np.argsort(radius, kind="stable")
    cum = np.cumsum(power.ravel()[order])
    if cum[-1] <= 0:
        return 1.0
    r = float(radius[order][np.searchsorted(cum, 0.999 * cum[-1])])
    return float(min(8.0, max(1.0, 1.0 / max(r, 1e-6))))


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


def border_fraction(grey: np.ndarray, tol: float = 3.0, edge: float = 24.0) -> float:
    """Letterbox: share of the area in uniform bars on *opposite* sides that end in a hard edge.

    A bar is a run of rows (columns) from the edge, each of one flat grey (std < ``tol``) equal to
    the edge row's. It counts only when the first row inside differs from the bar by more than
    ``edge`` grey levels over at least half of its length (a straight cut into the picture) and
    the opposite side has such a bar too. Character art on a white or transparent ground touches
    its margin only at a few points, so its margins are background, not letterbox.
    """
    g = grey.astype(np.float32)
    h, w = g.shape

    def bar(lines: np.ndarray) -> int:
        means, stds = lines.mean(axis=1), lines.std(axis=1)
        solid = (stds < tol) & (np.abs(means - means[0]) < tol)
        if not solid[0]:
            return 0
        stop = np.flatnonzero(~solid)
        if not len(stop):
            return len(solid)
        inside = lines[stop[0]]
        return int(stop[0]) if (np.abs(inside - means[0]) > edge).mean() >= 0.5 else 0

    top, bottom = bar(g), bar(g[::-1])
    left, right = bar(g.T), bar(g.T[::-1])
    rows = min(h, top + bottom) if top and bottom else 0
    cols = min(w, left + right) if left and right else 0
    covered = rows * w + cols * h - rows * cols
    return float(covered / (h * w))


def entropy(grey: np.ndarray) -> float:
    """Shannon entropy (bits) of the grey histogram of the given pixels (any shape)."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def straight_lines(grey: np.ndarray) -> float:
    """Share of the Canny edges on horizontal or vertical runs of 1/8 of the long side or more.

    Comic panel borders, UI boxes and table rules are long axis-aligned lines; drawings almost
    never are (a scene's architecture gives < 0.11 on the corpus, a UI screenshot > 0.13).
    """
    edges = cv2.Canny(grey, 60, 150)
    total = int((edges > 0).sum())
    if total == 0:
        return 0.0
    run = max(16, max(grey.shape) // 8)
    across = cv2.morphologyEx(edges, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (run, 1)))
    down = cv2.morphologyEx(edges, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, run)))
    return float(((across | down) > 0).sum() / total)


def art_features(rgb: np.ndarray, grey: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Drawn art vs photograph / render, over the content: flat fills, ink lines, colour count."""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    magnitude = np.hypot(gx, gy)[mask] / 4.0  # Sobel's gain is 4: grey levels per pixel
    strokes = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5)))
    px = rgb[mask].astype(np.int32)
    key = ((px[:, 0] >> 2) << 12) | ((px[:, 1] >> 2) << 6) | (px[:, 2] >> 2)  # 6 bits a channel
    colours = int(np.count_nonzero(np.bincount(key, minlength=1 << 18)))
    return {
        "flat_share": float((magnitude <= 1.0).mean()),
        "line_share": float((strokes[mask] > 40).mean()),
        "colour_count": float(colours / max(1, len(px))),
    }


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


def detail_crop(rgb: np.ndarray, side: int = DETAIL_SIDE) -> np.ndarray:
    """Grey centre crop of the full-resolution image, its origin on the 8x8 grid (for blockiness)."""
    h, w = rgb.shape[:2]
    c = min(side, h, w)
    top, left = (h - c) // 2 // 8 * 8, (w - c) // 2 // 8 * 8
    return gray(np.ascontiguousarray(rgb[top : top + c, left : left + c]))


def measure(rgb: np.ndarray, data: bytes | None = None, detail: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of one decoded image.

    ``rgb``: the image (the work copy is taken here); ``data``: the file bytes, for the JPEG
    tables; ``detail``: a full-resolution grey crop (``detail_crop``) for the measures that the
    downscaled copy would hide (blocking, grain, upscaling); default: the work copy's grey.
    """
    from .artmodel import illustration_probability

    small = work_copy(rgb)
    g = gray(small)
    detail = g if detail is None else detail
    mask = content_mask(small)
    chroma, spread = chroma_stats(small, mask)
    values = {
        "chroma_p95": chroma,
        "hue_spread": spread,
        "saturation": saturation(small, mask),
        "colorfulness": colorfulness(small, mask),
        "sharpness": sharpness(g),
        "jpeg_quality": jpeg_quality(data) if data is not None else math.nan,
        "blockiness": blockiness(detail),
        "noise": noise(g, mask),
        "upscale": upscale_factor(detail),
        "background": float(1.0 - mask.mean()),
        "border_fraction": border_fraction(g),
        "intensity_std": float(g[mask].std()),
        "entropy": entropy(g[mask]),
        "text_density": text_density(g),
        "straight_lines": straight_lines(g),
        **art_features(small, g, mask),
    }
    values["illustration"] = illustration_probability(values)
    return values


@dataclass(frozen=True)
class MetricThresholds:
    """``[metrics]``: a sample is rejected (stage ``metric``) when a metric crosses its limit.

    Each default leaves a margin on both sides on the labelled calibration set and the shared
    corpus (docs/curation.md has the measured ranges and the cross-validated figures); 0 or a
    negative value turns a ``min_`` check off, a value >= the metric's maximum turns a ``max_`` off.
    """

    min_chroma_p95: float = 5.0  # greyscale: colour art (content) >= 10.6, greyscale stored as RGB = 0
    min_hue_spread: float = 0.005  # single tint, together with max_tint_saturation
    max_tint_saturation: float = 28.0  # a single hue counts as monochrome only this weak (sepia pencil <= 17)
    min_colorfulness: float = 0.0  # off: feeds the quality score; chroma/hue already catch grey art
    min_sharpness: float = 400.0  # colour art >= 678; blurred noise 3, a x5 bicubic upscale 190
    min_jpeg_quality: float = 40.0  # corpus JPEGs estimate 50..98.5; below 40 blocking shows in the lines
    max_blockiness: float = 1.6  # clean art <= 1.39; JPEG q10 ~1.8 (also caught when re-saved as PNG)
    min_effective_side: float = 0.8  # (short side / upscale) >= this x scan.min_side; art >= 0.92
    max_noise: float = 5.0  # art <= 2.7 in its flattest quarter; uniform noise 17, grainy photos 12
    max_border_fraction: float = 0.3  # letterbox bars with a hard edge on opposite sides
    min_intensity_std: float = 10.0  # blank / flat fills; colour art >= 24
    min_entropy: float = 2.0  # of the content (background excluded); colour art >= 4.5 bits
    max_text_density: float = 0.015  # art <= 0.010; three speech bubbles of text give ~0.027
    max_straight_lines: float = 0.12  # panel borders / UI boxes; scenes <= 0.11, UI screenshots >= 0.13
    min_illustration: float = (
        0.45  # P(drawn illustration), curation/artmodel.json (CV figures there); 0 = off
    )
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricThresholds:
        return from_table(cls, data, "metrics")


def effective_side(values: dict[str, Any]) -> float:
    """The short side of the detail the image holds: short side / estimated upscale factor."""
    w, h, up = values.get("width"), values.get("height"), values.get("upscale")
    if not w or not h or up is None or (isinstance(up, float) and math.isnan(up)):
        return math.nan
    return min(w, h) / max(1.0, float(up))


def failed_metric(values: dict[str, Any], t: MetricThresholds, min_side: int = 256) -> tuple[str, str] | None:
    """(reason, detail) of the first threshold crossed, in a fixed order; None when all pass.

    ``min_side``: scan.min_side, the floor that the effective (detail) side is compared with.
    """
    if not t.enabled:
        return None
    sat = values.get("saturation")
    weak_tint = sat is None or (isinstance(sat, float) and math.isnan(sat)) or sat < t.max_tint_saturation
    checks = (
        ("chroma_p95", t.min_chroma_p95, "min", "greyscale"),
        ("hue_spread", t.min_hue_spread if weak_tint else 0.0, "min", "monochrome"),
        ("intensity_std", t.min_intensity_std, "min", "blank"),
        ("entropy", t.min_entropy, "min", "low_entropy"),
        ("colorfulness", t.min_colorfulness, "min", "low_colorfulness"),
        ("noise", t.max_noise, "max", "noisy"),
        ("sharpness", t.min_sharpness, "min", "blurry"),
        ("jpeg_quality", t.min_jpeg_quality, "min", "low_jpeg_quality"),
        ("effective_side", t.min_effective_side * min_side, "min", "upscaled"),
        ("blockiness", t.max_blockiness, "max", "jpeg_blocking"),
        ("border_fraction", t.max_border_fraction, "max", "letterboxed"),
        ("text_density", t.max_text_density, "max", "text_heavy"),
        ("straight_lines", t.max_straight_lines, "max", "panels"),
        ("illustration", t.min_illustration, "min", "not_illustration"),
    )
    for column, limit, kind, reason in checks:
        value = effective_side(values) if column == "effective_side" else values.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if kind == "min" and limit > 0 and value < limit:
            return reason, f"{column} {value:.3g} < {limit:g}"
        if kind == "max" and value > limit:
            return reason, f"{column} {value:.3g} > {limit:g}"
    return None
