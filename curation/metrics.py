"""Pixel metrics of one image: pure functions over arrays (NumPy/OpenCV), each a scan column.

Every metric runs on a downscaled copy (``work_copy``), so its cost is bounded whatever the
image size and its value does not depend on the resolution the file happened to be saved at
(blocking, grain and upscaling read a full-resolution crop instead, body text a 1024 px copy).
The thresholds that turn a metric into a reject live in ``MetricThresholds`` (``[metrics]``);
docs/curation.md gives the corpus distributions they were chosen from.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image

from groundwork.configtable import from_table

from .prepare import shrink_to

WORK_SIDE = 512  # long side of the copy every metric is measured on
DETAIL_SIDE = 512  # side of the full-resolution centre crop for blocking, noise and upscaling
# long side of the copy body text is read on: a 12 px glyph averaged into 512 px reads grey, not ink
LETTERING_SIDE = 1024
LIGHT_GROUND = 200  # grey a text line's ground exceeds on white paper; scaled to the page's own paper

METRIC_COLUMNS = (
    "chroma_p95",  # 95th percentile of Lab chroma of the content; greyscale art is ~0
    "hue_spread",  # share of coloured content pixels > 60 degrees off the dominant hue; ~0 = a single tint
    "saturation",  # mean HSV saturation (0..255) of the content; a weak tint (sepia pencil) is low
    "colorfulness",  # Hasler & Suesstrunk (2003) M of the content
    "sharpness",  # variance of the Laplacian of the median-filtered grey work copy (noise does not count)
    "jpeg_quality",  # 1..100 estimated from the luminance quantisation table; NaN for non-JPEG
    "blockiness",  # gradient on the 8x8 grid / gradient elsewhere, full resolution; ~1 = no JPEG blocks
    "noise",  # grain in the flattest quarter of the picture (mean |x - median3|, grey levels)
    "upscale",  # softness: upscale factor read from the whole spectrum's fall-off (1 = detail up to Nyquist)
    "edge_upscale",  # upscale factor read at the edges (and a nearest-neighbour mosaic): the lines' detail
    "background",  # share of the area in a plain background reaching the edges (white, transparent, flat)
    "border_fraction",  # letterbox: share of the area in uniform bars with a hard edge on opposite sides
    "intensity_std",  # std of grey levels of the content; a blank or flat image is ~0
    "entropy",  # Shannon entropy of the content's grey histogram, bits (0..8)
    "text_density",  # share of the area covered by text-line-like blobs
    "text_area",  # share of the area in lines of large lettering on a flat ground: titles, logos, banners
    "straight_lines",  # share of edges on long horizontal/vertical runs: panel borders, UI boxes, architecture
    "panels",  # rectangular panels separated by straight gutters (a comic page's grid), counted
    "balloons",  # speech balloons (closed, convex, light shapes holding lines of glyphs), counted
    "flat_share",  # share of content pixels with ~no gradient: drawn art has flat fills, photos grain
    "line_share",  # share of content pixels on thin dark strokes (line art)
    "colour_count",  # distinct 18-bit (6 bits a channel) colours / content pixels: photos, GAN texture high
    "edge_sharpness",  # median edge gradient / local (7x7) contrast at the detail's own scale: ink abrupt, photos spread
    "edge_coherence",  # median structure-tensor coherence (7x7) on the edges: drawn lines run smooth, texture jagged
    "illustration",  # P(drawn illustration) from the classical features (curation/artmodel.py)
)


def work_copy(rgb: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """Downscale (never upscale) so that the long side is at most ``side``; INTER_AREA averages."""
    return shrink_to(rgb, side)


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


def _cutoff_factor(power: np.ndarray, n: int, share: float = 0.999) -> float:
    """1 / (Chebyshev radius, as a share of Nyquist, within which ``share`` of an ``n``-point rfft2's power lies)."""
    fy = np.abs(np.fft.fftfreq(n))[:, None] * 2
    fx = np.fft.rfftfreq(n)[None, :] * 2
    radius = np.maximum(fy, fx).ravel()  # Chebyshev radius: the grid's own Nyquist square
    order = np.argsort(radius, kind="stable")
    cum = np.cumsum(power.ravel()[order])
    if cum[-1] <= 0:
        return 1.0
    r = float(radius[order][np.searchsorted(cum, share * cum[-1])])
    return 1.0 / max(r, 1e-6)


EDGE_TILE = 64  # px of full resolution per spectrum tile
MOSAIC_RATIO = 3.0  # gradient on a k-pixel grid vs elsewhere, k = 2..7, that says "nearest-neighbour upscale"


def mosaic_period(detail: np.ndarray, ratio: float = MOSAIC_RATIO) -> int:
    """k (2..7) when the image is a nearest-neighbour upscale by k (blocks of k x k equal pixels), else 1.

    Such an image changes only every k pixels: the mean |gradient| at one phase of a k-pixel grid is
    many times the mean at the other phases, in both directions (a x2 pixelated crop: ~15; drawn or
    photographed images: <= 1.2). Period 8 is JPEG's grid, which ``blockiness`` reads; a multiple of
    the best period is not a period of its own, so the strongest one is taken.
    """
    f = detail.astype(np.float32)
    profiles = (np.abs(np.diff(f, axis=1)).mean(axis=0), np.abs(np.diff(f, axis=0)).mean(axis=1))
    best, period = 1.0, 1
    for k in range(2, 9):
        worse = math.inf
        for d in profiles:
            n = len(d) // k * k
            if n < 4 * k:
                return 1
            phase = d[:n].reshape(-1, k).mean(axis=0)
            top = int(phase.argmax())
            worse = min(worse, float((phase[top] + 0.5) / (np.delete(phase, top).mean() + 0.5)))
        if worse > best:
            best, period = worse, k
    return period if period < 8 and best >= ratio else 1


def upscale_factor(detail: np.ndarray) -> float:
    """How much softer the whole image is than its pixel grid, from the power spectrum's fall-off.

    The radius (as a share of Nyquist) within which 99.9 % of the windowed spectrum's energy lies;
    an image upscaled k times has nothing beyond 1/k of Nyquist. Returns 1 / that radius, clipped to
    [1, 8]. A soft (painted, smoothly shaded, blurred) image reads as mildly upscaled, which is what
    the high tier and the resolution score want to know; whether the *lines* hold detail (the
    ``upscaled`` reject) is ``edge_upscale``.
    """
    f = detail.astype(np.float32)
    n = min(f.shape)
    if n < 32:
        return 1.0
    f = f[:n, :n]
    win = np.hanning(n).astype(np.float32)
    power = np.abs(np.fft.rfft2((f - f.mean()) * np.outer(win, win))) ** 2
    return float(min(8.0, max(1.0, _cutoff_factor(power, n))))


def edge_upscale(detail: np.ndarray, tile: int = EDGE_TILE) -> float:
    """How many times larger the image is than the detail its edges hold, clipped to [1, 8].

    Measured where the picture has edges: the power spectrum of the quarter of ``tile``-pixel tiles
    with the most gradient; 1 / the radius (share of Nyquist) within which 99.9 % of their energy
    lies. An image upscaled k times has nothing beyond 1/k of Nyquist even at its edges (x2: 1.6-1.9,
    x4: 2.9-3.2 on corpus art), while a soft but native anime frame -- large flat fills and gentle
    shading around crisp lines -- reads ~1.1 (the whole-image spectrum, ``upscale_factor``, reads
    such frames as 2-4x: their flat areas drown the lines' energy). A nearest-neighbour upscale
    keeps hard block edges, so its mosaic period is taken when it has one (``mosaic_period``). No
    edge at all (a flat fill, a smooth gradient): 8, nothing to hold.
    """
    f = detail.astype(np.float32)
    n = min(f.shape)
    if n < 32:
        return 1.0
    period = mosaic_period(detail)
    t = min(tile, n)
    ty, tx = f.shape[0] // t, f.shape[1] // t
    tiles = f[: ty * t, : tx * t].reshape(ty, t, tx, t).transpose(0, 2, 1, 3).reshape(-1, t, t)
    grad = np.abs(np.diff(tiles, axis=2)).mean(axis=(1, 2)) + np.abs(np.diff(tiles, axis=1)).mean(axis=(1, 2))
    if float(grad.max()) < 1.0:  # under a grey level per pixel everywhere: no edge anywhere
        return 8.0
    chosen = tiles[np.argsort(-grad, kind="stable")[: max(1, round(len(tiles) / 4))]]
    win = np.hanning(t).astype(np.float32)
    chosen = (chosen - chosen.mean(axis=(1, 2), keepdims=True)) * np.outer(win, win)
    power = (np.abs(np.fft.rfft2(chosen)) ** 2).mean(axis=0)
    return float(min(8.0, max(1.0, float(period), _cutoff_factor(power, t))))


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
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse (OSError, SyntaxError, struct.error, ...): no quality estimate, the decode path rejects it with a reason
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


class EdgeField(NamedTuple):
    """One grey image as the edge measures read it: its Canny edges (80/160) inside the content, or
    None under 50 of them (too few to judge: each measure then reads a neutral 0.5), and its Sobel
    gradient. Made once per image (``edge_field``) and read by every edge measure."""

    grey: np.ndarray
    edges: np.ndarray | None
    gx: np.ndarray
    gy: np.ndarray


def edge_field(grey: np.ndarray, mask: np.ndarray | None = None) -> EdgeField:
    """The edge field of ``grey``, its edges counted inside ``mask`` (the content: a plain
    background's edges count only at its silhouette)."""
    edges = cv2.Canny(grey, 80, 160) > 0
    if mask is not None:
        edges &= mask
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return EdgeField(grey, edges if edges.sum() >= 50 else None, gx, gy)


def detail_field(rgb: np.ndarray, upscale: float = 1.0, field: EdgeField | None = None) -> EdgeField:
    """The edge field at the resolution of the detail ``rgb`` holds: downscaled by its ``upscale``
    factor, so an upscaled illustration is not taken for a photograph merely for being soft.
    ``field``: ``rgb``'s own field, used as it is when there is nothing to downscale."""
    if upscale > 1.05:
        h, w = rgb.shape[:2]
        size = (max(1, round(w / upscale)), max(1, round(h / upscale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    elif field is not None:
        return field
    return edge_field(gray(rgb), content_mask(rgb))


def edge_sharpness(field: EdgeField) -> float:
    """How abrupt the edges are: median over the edges of |gradient| / (7x7 max - min), in [0, ~1].

    A drawn ink or cel edge is a step: the whole contrast is crossed within a pixel (corpus art
    ~0.6-0.75); a photograph's edges are spread by the lens, demosaicing and depth of field over a
    few pixels (~0.5-0.6). The 7x7 window spans +-3 px, so a spread edge is measured against its
    whole contrast (5x5 cut photo edges short and read them as sharper). ``measure`` reads it on
    the detail's own scale (``detail_field``).
    """
    edges = field.edges
    if edges is None:
        return 0.5
    magnitude = np.hypot(field.gx[edges], field.gy[edges]) / 4.0  # Sobel's gain is 4
    k = np.ones((7, 7), np.uint8)
    contrast = cv2.dilate(field.grey, k).astype(np.float32) - cv2.erode(field.grey, k).astype(np.float32)
    return float(np.median(magnitude / (contrast[edges] + 1.0)))


def edge_coherence(field: EdgeField) -> float:
    """How smoothly the edges run: median over the edges of the structure tensor's coherence, in [0, 1].

    Coherence, (l1 - l2) / (l1 + l2) of the gradient's structure tensor over a 7x7 Gaussian window
    (the window ``edge_sharpness`` reads contrast in), is 1 where the gradient keeps one direction
    and 0 where it turns every way. A drawn line or a cel boundary is a deliberate smooth curve
    (labelled keeps 0.69-0.99, median 0.91); a photograph's edges are corners, foliage, fabric and
    clutter that break up within a few pixels (the two shared photos 0.55 and 0.78).
    """
    edges = field.edges
    if edges is None:
        return 0.5
    gx, gy = field.gx, field.gy
    jxx = cv2.GaussianBlur(gx * gx, (7, 7), 0)[edges]
    jyy = cv2.GaussianBlur(gy * gy, (7, 7), 0)[edges]
    jxy = cv2.GaussianBlur(gx * gy, (7, 7), 0)[edges]
    return float(np.median(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-6)))


def border_paper(grey: np.ndarray, tol: int = 16) -> tuple[float, float]:
    """The border's dominant grey (median of its most common 8-level bin) and the share of the
    border within ``tol`` of it: the paper of a page, the ground of a cut-out."""
    g = grey.astype(np.int16)
    edge = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    values, counts = np.unique(edge // 8, return_counts=True)
    level = float(np.median(edge[edge // 8 == values[counts.argmax()]]))
    return level, float((np.abs(edge - level) <= tol).mean())


def paper_white(grey: np.ndarray) -> float:
    """The page's white: its paper's grey when at least half the border is one light grey (>= 150;
    a darker border is a picture's ground, not paper), else 255. Old pages yellow to ~200."""
    level, share = border_paper(grey)
    return level if share >= 0.5 and level >= 150 else 255.0


def lettering_copy(rgb: np.ndarray) -> np.ndarray:
    """Grey copy with the long side at most ``LETTERING_SIDE``, for ``text_density``."""
    return gray(work_copy(rgb, LETTERING_SIDE))


def text_density(grey: np.ndarray) -> float:
    """Share of the area in text-line-like blobs: rows of small dark strokes on a light, flat ground.

    Lettering (speech bubbles, captions, text pages) is many short high-contrast strokes packed in
    lines. A morphological black-hat finds small dark strokes; a closing along the line direction
    (horizontal, and separately vertical for Japanese text) merges a line's glyphs into one blob;
    blobs count when they are line-shaped, text-sized and half filled with strokes. "Light" is
    relative to the page's paper (``paper_white``): a yellowed page's balloons are as light as its
    paper, not as white paper. Scan: on ``lettering_copy`` (12 px glyphs must stay ink).
    """
    h, w = grey.shape
    unit = max(3, round(max(h, w) / 128))  # glyph scale relative to the copy
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * unit + 1, 2 * unit + 1))
    strokes = (cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, k) > 60).astype(np.uint8)
    # A light local background is what separates lettering from hair or clothing detail.
    ground = grey > LIGHT_GROUND * paper_white(grey) / 255.0
    light = cv2.blur(ground.astype(np.float32), (4 * unit + 1, 4 * unit + 1)) > 0.5
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


def _flat_ground(rgb: np.ndarray, win: int = 5, tol: int = 12) -> np.ndarray:
    """Pixels whose ``win`` x ``win`` neighbourhood varies by at most ``tol`` levels in every channel."""
    k = np.ones((win, win), np.uint8)
    spread = np.zeros(rgb.shape[:2], np.int16)
    for c in range(3):
        ch = np.ascontiguousarray(rgb[..., c])
        spread = np.maximum(spread, cv2.dilate(ch, k).astype(np.int16) - cv2.erode(ch, k))
    return spread <= tol


def _enclosed(region: np.ndarray) -> np.ndarray:
    """Pixels outside ``region`` that it encloses (their component does not reach the image edge)."""
    n, labels = cv2.connectedComponents((~region).astype(np.uint8), connectivity=8)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, np.setdiff1d(np.arange(1, n), edge))


def _text_lines(boxes: np.ndarray, min_glyphs: int = 3) -> list[np.ndarray]:
    """Groups of >= ``min_glyphs`` boxes (x, y, w, h) that sit on one line, horizontal or vertical.

    Two glyphs share a line when they overlap by >= 60 % of the smaller across the line, differ in
    size by at most 2x and are at most 0.8 glyph sizes apart along it: pair tests as NumPy arrays,
    then union-find over the pairs that pass.
    """
    x, y, w, h = (boxes[:, i][:, None] for i in range(4))
    linked = np.zeros((len(boxes), len(boxes)), bool)
    for p, s, q, t in ((y, h, x, w), (x, w, y, h)):  # horizontal line: overlap in y, gap in x; then vertical
        overlap = np.minimum(p + s, (p + s).T) - np.maximum(p, p.T)
        small, big = np.minimum(s, s.T), np.maximum(s, s.T)
        gap = np.maximum(q, q.T) - np.minimum(q + t, (q + t).T)
        linked |= (overlap >= 0.6 * small) & (big <= 2.0 * small) & (gap <= 0.8 * big)
    parent = list(range(len(boxes)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in np.argwhere(np.triu(linked, 1)):
        parent[root(int(a))] = root(int(b))
    groups: dict[int, list[int]] = {}
    for a in range(len(boxes)):
        groups.setdefault(root(a), []).append(a)
    return [boxes[g] for g in groups.values() if len(g) >= min_glyphs]


def text_area(rgb: np.ndarray, min_glyph: float = 0.04, ink: int = 40) -> float:
    """Share of the area covered by lines of large lettering on a flat ground (titles, logos, banners).

    ``text_density`` finds body text (small strokes in rows); a title that fills half a banner is
    a few big glyphs instead. Here: a flat ground (>= 4 % of the area, every 5x5 neighbourhood of a
    5x5-median copy within 12 levels, so ruled or grid paper is flat too), the shapes it encloses
    that are darker -- or, separately, lighter -- than it by > ``ink`` grey levels (outlined
    lettering splits into its glyphs in one of the two), those at least ``min_glyph`` of the image's
    height (or width) tall and glyph-shaped (aspect within 4:1, >= 15 % of their box inked: a pencil
    stroke or a hair strand is a thin curve), grouped into lines of >= 3 of similar size (``_text_lines``);
    the lines' bounding boxes are the lettering. A character on a white ground is one shape, not
    a line of them.
    """
    h, w = rgb.shape[:2]
    g = gray(rgb).astype(np.int16)
    flat = _flat_ground(cv2.medianBlur(rgb, 5)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=4)
    covered = np.zeros((h, w), bool)
    for i in np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= 0.04 * h * w):
        if i == 0:
            continue
        region = labels == i
        enclosed = _enclosed(region)
        level = np.median(g[region])
        for glyphs in ((level - g > ink) & enclosed, (g - level > ink) & enclosed):
            k, _, gs, _ = cv2.connectedComponentsWithStats(glyphs.astype(np.uint8), connectivity=8)
            bw, bh, area = (gs[1:, c] for c in (cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA))
            big = ((bh >= min_glyph * h) | (bw >= min_glyph * w)) & (bh <= 0.6 * h) & (bw <= 0.6 * w)
            big &= (area >= 0.15 * bw * bh) & (bw <= 4 * bh) & (bh <= 4 * bw)  # glyph-shaped, not a stroke
            if big.sum() < 3:
                continue
            for line in _text_lines(gs[1:, :4][big].astype(np.float64)):
                x0, y0 = line[:, 0].min(), line[:, 1].min()
                x1, y1 = (line[:, 0] + line[:, 2]).max(), (line[:, 1] + line[:, 3]).max()
                covered[int(y0) : int(y1), int(x0) : int(x1)] = True
    return float(covered.mean())


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def panel_count(grey: np.ndarray, tol: int = 16, gutter: int = 2, cover: float = 0.97, depth: int = 4) -> int:
    """Rectangular panels separated by straight gutters: a comic page's grid (recursive XY cut).

    Paper is the edges' dominant grey (+-``tol``). A gutter is a run of >= ``gutter`` rows (or
    columns) that are >= ``cover`` paper across the region; the page is cut along gutters, rows and
    columns alternately, ``depth`` levels deep, margins trimmed. A leaf counts as a panel when it
    covers >= 2 % of the page and is a closed rectangle: each of its four sides is >= 70 % picture
    (a frame line or a full-bleed picture). Architecture has lines but no paper gutters between
    rectangles; a character on white touches its box at a few points only.
    """
    g = grey.astype(np.int16)
    h, w = g.shape
    paper = np.abs(g - border_paper(grey, tol)[0]) <= tol
    panels = 0

    def cut(y0: int, y1: int, x0: int, x1: int, axis: int, level: int, turned: bool = False) -> None:
        nonlocal panels
        sub = paper[y0:y1, x0:x1]
        rows, cols = np.flatnonzero(sub.mean(axis=1) < cover), np.flatnonzero(sub.mean(axis=0) < cover)
        if not len(rows) or not len(cols):
            return
        y0, y1, x0, x1 = y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1  # margins off
        sub = paper[y0:y1, x0:x1]
        gutters = [r for r in _runs(sub.mean(axis=1 - axis) >= cover) if r[1] - r[0] >= gutter]
        if gutters and level < depth:
            start = 0
            for a, b in [*gutters, (sub.shape[axis], sub.shape[axis])]:
                if a > start:
                    if axis == 0:
                        cut(y0 + start, y0 + a, x0, x1, 1, level + 1)
                    else:
                        cut(y0, y1, x0 + start, x0 + a, 0, level + 1)
                start = b
            return
        if not turned and level < depth:
            cut(y0, y1, x0, x1, 1 - axis, level, True)
            return
        if (y1 - y0) * (x1 - x0) >= 0.02 * h * w:
            sides = (paper[y0, x0:x1], paper[y1 - 1, x0:x1], paper[y0:y1, x0], paper[y0:y1, x1 - 1])
            panels += all(1.0 - s.mean() >= 0.7 for s in sides)

    cut(0, h, 0, w, 0, 0)
    return panels


def balloon_count(rgb: np.ndarray) -> int:
    """Speech balloons: closed, convex, light shapes with lettering written straight on them.

    A balloon is a near-white component (grey >= 225, HSV saturation <= 40) covering 0.2-25 % of
    the image that, with what it encloses filled in, is convex (solidity >= 0.85; a balloon cut by
    the panel edge counts: the edge closes it). Its lettering: near-black, unsaturated marks
    (grey < 100, channel spread < 50) touching the balloon's white, >= 4 of glyph size, covering
    2-40 % of it. A white shirt's coloured buttons, an eye highlight or a picture framed inside a
    bubble hold no such marks.
    """
    g = gray(rgb)
    h, w = g.shape
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    light = ((g >= 225) & (sat <= 40)).astype(np.uint8)
    ink = (g < 100) & ((rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)) < 50)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(light, connectivity=4)
    near = np.ones((5, 5), np.uint8)
    found = 0
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if not 0.002 * h * w <= area <= 0.25 * h * w:
            continue
        shape = labels[y : y + bh, x : x + bw] == i
        inside = np.pad(~shape, 1, constant_values=True).astype(np.uint8)
        cv2.floodFill(inside, None, (0, 0), 0)  # what stays 1 is enclosed by the shape
        filled = shape | inside[1:-1, 1:-1].astype(bool)
        contours, _ = cv2.findContours(filled.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = cv2.contourArea(cv2.convexHull(max(contours, key=cv2.contourArea)))
        if filled.sum() < 0.85 * hull:
            continue
        marks = filled & ~shape & ink[y : y + bh, x : x + bw] & (cv2.dilate(shape.astype(np.uint8), near) > 0)
        if not 0.02 <= marks.sum() / filled.sum() <= 0.4:
            continue
        k, _, ms, _ = cv2.connectedComponentsWithStats(marks.astype(np.uint8), connectivity=8)
        glyphs = (ms[1:, cv2.CC_STAT_HEIGHT] <= 0.35 * bh) & (ms[1:, cv2.CC_STAT_WIDTH] <= 0.5 * bw)
        found += int(glyphs.sum() >= 4)
    return found


def detail_crop(rgb: np.ndarray, side: int = DETAIL_SIDE) -> np.ndarray:
    """Grey centre crop of the full-resolution image, its origin on the 8x8 grid (for blockiness)."""
    h, w = rgb.shape[:2]
    c = min(side, h, w)
    top, left = (h - c) // 2 // 8 * 8, (w - c) // 2 // 8 * 8
    return gray(np.ascontiguousarray(rgb[top : top + c, left : left + c]))


def measure(
    rgb: np.ndarray,
    data: bytes | None = None,
    detail: np.ndarray | None = None,
    lettering: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of one decoded image.

    ``rgb``: the image (the work copy is taken here); ``data``: the file bytes, for the JPEG
    tables; ``detail``: a full-resolution grey crop (``detail_crop``) for the measures that the
    downscaled copy would hide (blocking, grain, upscaling); default: the work copy's grey.
    ``lettering``: the grey ``lettering_copy`` of the full image, for body text; default: taken from ``rgb``.
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
        "edge_upscale": edge_upscale(detail),
        "background": float(1.0 - mask.mean()),
        "border_fraction": border_fraction(g),
        "intensity_std": float(g[mask].std()),
        "entropy": entropy(g[mask]),
        "text_density": text_density(lettering_copy(rgb) if lettering is None else lettering),
        "text_area": text_area(small),
        "straight_lines": straight_lines(g),
        "panels": float(panel_count(g)),
        "balloons": float(balloon_count(small)),
        **art_features(small, g, mask),
    }
    field = edge_field(g, mask)  # one Canny and one Sobel pair for both edge measures
    values["edge_sharpness"] = edge_sharpness(detail_field(small, values["upscale"], field))
    values["edge_coherence"] = edge_coherence(field)
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
    crisp_edge_upscale: float = 1.3  # edges this crisp (edge_upscale) are not blurred, whatever the Laplacian
    min_jpeg_quality: float = 40.0  # corpus JPEGs estimate 50..98.5; below 40 blocking shows in the lines
    max_blockiness: float = 1.6  # clean art <= 1.39; JPEG q10 ~1.8 (also caught when re-saved as PNG)
    min_effective_side: float = 0.8  # (short side / upscale) >= this x scan.min_side; art >= 0.92
    max_noise: float = 5.0  # art <= 2.7 in its flattest quarter; uniform noise 17, grainy photos 12
    max_border_fraction: float = 0.3  # letterbox bars with a hard edge on opposite sides
    min_intensity_std: float = 10.0  # blank / flat fills; colour art >= 24
    min_entropy: float = 2.0  # of the content (background excluded); colour art >= 4.5 bits
    max_text_density: float = 0.015  # art <= 0.008; lettered pages 0.017-0.048 (one on yellowed paper 0.017)
    max_text_area: float = 0.05  # large lettering: art <= 0.008, title banners 0.10-0.13
    max_panels: float = 1.0  # two or more gutter-separated rectangular panels: a comic page
    max_balloons: float = 1.0  # two or more speech balloons (one: a sign, a caption; art has <= 1)
    max_straight_lines: float = 1.0  # off: architecture is straight lines too; panels and balloons decide
    min_illustration: float = 0.5  # P(drawn illustration), curation/artmodel.json (CV figures there); 0 = off
    illustration_defer: float = (
        0.1  # with a photo classifier configured, the cut steps back this much: it decides
    )
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricThresholds:
        return from_table(cls, data, "metrics")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def effective_side(values: dict[str, Any]) -> float:
    """The short side of the detail the image's edges hold: short side / ``edge_upscale``.

    Scan tables written before ``edge_upscale`` existed fall back to ``upscale``.
    """
    w, h = values.get("width"), values.get("height")
    up = values.get("upscale") if _missing(values.get("edge_upscale")) else values.get("edge_upscale")
    if not w or not h or up is None or (isinstance(up, float) and math.isnan(up)):
        return math.nan
    return min(w, h) / max(1.0, float(up))


@dataclass(frozen=True)
class Crossing:
    """The first ``[metrics]`` limit an image crosses: its reason, the column, its value and the limit."""

    reason: str
    column: str
    value: float
    limit: float
    kind: str  # "min" or "max"

    @property
    def detail(self) -> str:
        return f"{self.column} {self.value:.3g} {'<' if self.kind == 'min' else '>'} {self.limit:g}"

    @property
    def margin(self) -> float:
        """How far past the limit, relative to it, in [0, 1]: how sure the rule is of its reject."""
        return float(min(1.0, abs(self.value - self.limit) / max(abs(self.limit), 1e-9)))


def first_crossing(values: dict[str, Any], t: MetricThresholds, min_side: int = 256) -> Crossing | None:
    """The first threshold crossed, in a fixed order; None when all pass (or the rules are off).

    ``min_side``: scan.min_side, the floor that the effective (detail) side is compared with.
    """
    if not t.enabled:
        return None
    sat = values.get("saturation")
    weak_tint = sat is None or (isinstance(sat, float) and math.isnan(sat)) or sat < t.max_tint_saturation
    edges = values.get("edge_upscale")
    crisp = not _missing(edges) and edges <= t.crisp_edge_upscale  # a dim, soft-lit scene is not blurred
    checks = (
        ("chroma_p95", t.min_chroma_p95, "min", "greyscale"),
        ("hue_spread", t.min_hue_spread if weak_tint else 0.0, "min", "monochrome"),
        ("intensity_std", t.min_intensity_std, "min", "blank"),
        ("entropy", t.min_entropy, "min", "low_entropy"),
        ("colorfulness", t.min_colorfulness, "min", "low_colorfulness"),
        ("noise", t.max_noise, "max", "noisy"),
        ("sharpness", 0.0 if crisp else t.min_sharpness, "min", "blurry"),
        ("jpeg_quality", t.min_jpeg_quality, "min", "low_jpeg_quality"),
        ("effective_side", t.min_effective_side * min_side, "min", "upscaled"),
        ("blockiness", t.max_blockiness, "max", "jpeg_blocking"),
        ("border_fraction", t.max_border_fraction, "max", "letterboxed"),
        ("text_density", t.max_text_density, "max", "text_heavy"),
        ("text_area", t.max_text_area, "max", "text_heavy"),
        ("panels", t.max_panels, "max", "panels"),
        ("balloons", t.max_balloons, "max", "panels"),
        ("straight_lines", t.max_straight_lines, "max", "panels"),
        ("illustration", t.min_illustration, "min", "not_illustration"),
    )
    for column, limit, kind, reason in checks:
        value = effective_side(values) if column == "effective_side" else values.get(column)
        if _missing(value):
            continue
        if (kind == "min" and limit > 0 and value < limit) or (kind == "max" and value > limit):
            return Crossing(reason, column, float(value), float(limit), kind)
    return None


def failed_metric(values: dict[str, Any], t: MetricThresholds, min_side: int = 256) -> tuple[str, str] | None:
    """(reason, detail) of the first threshold crossed (``first_crossing``); None when all pass."""
    crossed = first_crossing(values, t, min_side)
    return None if crossed is None else (crossed.reason, crossed.detail)
