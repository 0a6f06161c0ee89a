"""Batched torch versions of the classical operators: ``N x H x W x 3 uint8`` tensor in, ``N x H x W uint8`` out.

They mirror the OpenCV path in lineart/classical.py step by step (same gray weights, same kernels,
same border rules, same rounding), so the two agree within the tolerances tests/test_lineart_classical.py
states. Plain torch, no kornia: every step is a convolution, a pooling or an elementwise op, and the
torch path exists for GPUs; on a CPU the OpenCV path is the fast one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .filters import canny_thresholds, gaussian_kernel, gray_table, opencv_block_kernel, xdog_epsilon

# Canny's direction test in fixed point, as OpenCV does it (imgproc/canny.cpp): tan(22.5 deg) << 15.
_CANNY_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)


def _border_index(n: int, r: int, mode: str, device) -> torch.Tensor:
    """Source indices for a 1-D signal of length ``n`` padded by ``r`` on both sides."""
    i = np.arange(-r, n + r)
    if mode == "replicate":
        i = np.clip(i, 0, n - 1)
    elif n == 1:
        i = np.zeros_like(i)
    else:  # reflect-101 (OpenCV's default border): ... 2 1 | 0 1 2 ... n-1 | n-2 ...; any pad width
        period = 2 * (n - 1)
        i = np.mod(i, period)
        i = np.where(i >= n, period - i, i)
    return torch.as_tensor(i, dtype=torch.long, device=device)


def _pad(x: torch.Tensor, r: int, mode: str, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    for d in dims:
        x = x.index_select(d, _border_index(x.shape[d], r, mode, x.device))
    return x


def separable(x: torch.Tensor, k: np.ndarray, mode: str = "reflect101") -> torch.Tensor:
    """Convolve ``N x 1 x H x W`` float32 with the separable kernel ``k`` (rows first, as OpenCV)."""
    r = len(k) // 2
    w = torch.as_tensor(np.asarray(k, np.float32), device=x.device)
    x = F.conv2d(_pad(x, r, mode, (-1,)), w.view(1, 1, 1, -1))
    return F.conv2d(_pad(x, r, mode, (-2,)), w.view(1, 1, -1, 1))


def gray(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``N x H x W x 3`` RGB -> int32 ``N x 1 x H x W``, bit-exact with the OpenCV path's gray."""
    x = batch.to(torch.int32)
    (r, g, b, shift), _ = gray_table()
    y = x[..., 0] * r + x[..., 1] * g + x[..., 2] * b
    return ((y + (1 << (shift - 1))) >> shift).unsqueeze(1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).clamp_(0, 255).to(torch.uint8).squeeze(1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return separable(x, gaussian_kernel(sigma).astype(np.float32)) if sigma > 0 else x


def _sobel(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """3x3 Sobel derivatives of ``N x 1 x H x W`` float32 (cv2.Sobel, ksize=3, scale 1)."""
    p = _pad(x, 1, mode)
    smooth = torch.tensor([1.0, 2.0, 1.0], device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], device=x.device)
    dx = F.conv2d(p, (smooth.view(3, 1) * diff.view(1, 3)).view(1, 1, 3, 3))
    dy = F.conv2d(p, (diff.view(3, 1) * smooth.view(1, 3)).view(1, 1, 3, 3))
    return dx, dy


def median(g: torch.Tensor) -> list[float]:
    """Per-image median of ``N x 1 x H x W`` integers with numpy's convention (mean of the middle two)."""
    flat = g.flatten(1)
    n = flat.shape[1]
    hi = flat.kthvalue(n // 2 + 1, dim=1).values.double()
    lo = flat.kthvalue((n + 1) // 2, dim=1).values.double()
    return ((lo + hi) / 2).tolist()


def canny(
    batch: torch.Tensor, *, low: float, high: float, mode: str, sigma: float, blur: float, edge_share: float,
    ratio: float, min_high: float,
) -> torch.Tensor:  # fmt: skip
    """OpenCV's Canny (L1 gradient, aperture 3) on a batch; hysteresis by repeated 3x3 dilation."""
    g = gray(batch).float()
    if blur > 0:
        g = torch.round(_blur(g, blur)).clamp_(0, 255)
    dx, dy = _sobel(g, "replicate")  # integers, exact in float32
    mag = dx.abs() + dy.abs()
    if mode == "median":
        stats = median(g)
    elif mode == "gradient":
        stats = order_statistic(mag, 1.0 - edge_share)
    else:
        stats = [0.0] * g.shape[0]
    lows, highs = zip(
        *(canny_thresholds(low, high, mode, sigma, s, ratio, min_high) for s in stats), strict=True
    )
    lo = torch.tensor(lows, dtype=torch.float32, device=g.device).view(-1, 1, 1, 1)
    hi = torch.tensor(highs, dtype=torch.float32, device=g.device).view(-1, 1, 1, 1)

    m = F.pad(mag, (1, 1, 1, 1))  # magnitudes outside the image are 0, as in OpenCV's ring buffer

    def at(oy: int, ox: int) -> torch.Tensor:
        h, w = mag.shape[-2:]
        return m[..., 1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]

    ax, ay = dx.abs().to(torch.int64), dy.abs().to(torch.int64)
    y = ay << _CANNY_SHIFT
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << (_CANNY_SHIFT + 1))
    horiz = y < tg22x
    vert = ~horiz & (y > tg67x)
    diag = ~horiz & ~vert
    same_sign = (dx < 0) == (dy < 0)  # OpenCV: s = (xs ^ ys) < 0 ? -1 : 1
    peak = (
        (horiz & (mag > at(0, -1)) & (mag >= at(0, 1)))
        | (vert & (mag > at(-1, 0)) & (mag >= at(1, 0)))
        | (diag & same_sign & (mag > at(-1, -1)) & (mag > at(1, 1)))
        | (diag & ~same_sign & (mag > at(-1, 1)) & (mag > at(1, -1)))
    )
    weak = peak & (mag > lo)
    edges = weak & (mag > hi)
    weak_f = weak.to(mag.dtype)
    # Hysteresis: grow the strong edges through 8-connected weak pixels until nothing changes.
    # Checking for convergence only every few steps keeps the GPU from syncing on every step.
    count = int(edges.sum())
    while True:
        e = edges.to(mag.dtype)
        for _ in range(8):
            e = F.max_pool2d(e, 3, 1, 1) * weak_f
        edges = e > 0
        new = int(edges.sum())
        if new == count:
            break
        count = new
    return (255 - edges.to(torch.uint8) * 255).squeeze(1)


def order_statistic(g: torch.Tensor, q: float) -> list[float]:
    """Per-image value at rank ``floor(q * (n - 1))`` of ``N x 1 x H x W`` (filters.order_statistic)."""
    flat = g.flatten(1)
    k = math.floor(q * (flat.shape[1] - 1))
    return flat.kthvalue(k + 1, dim=1).values.double().tolist()


def xdog(
    batch: torch.Tensor,
    *,
    sigma: float,
    k: float,
    p: float,
    epsilon: float,
    phi: float,
    mode: str,
    quantile: float,
) -> torch.Tensor:
    g8 = gray(batch)
    qs = order_statistic(g8, quantile) if mode == "quantile" else [0.0] * g8.shape[0]
    eps = [xdog_epsilon(epsilon, mode, q) for q in qs]
    # float64 thresholds rounded to float32 as numpy does when it compares a float32 array to a Python float
    e = torch.tensor(eps, dtype=torch.float32, device=g8.device).view(-1, 1, 1, 1)
    g = g8.float() / 255.0
    d = (1.0 + p) * _blur(g, sigma) - p * _blur(g, sigma * k)
    out = torch.where(d >= e, torch.ones_like(d), 1.0 + torch.tanh(phi * (d - e)))
    return _to_uint8(out * 255.0)


def dog(batch: torch.Tensor, *, sigma: float, k: float, gain: float) -> torch.Tensor:
    g = gray(batch).float() / 255.0
    ink = ((_blur(g, sigma * k) - _blur(g, sigma)) * gain).clamp_(0.0, 1.0)
    return _to_uint8((1.0 - ink) * 255.0)


def sobel(batch: torch.Tensor, *, blur: float, scale: float) -> torch.Tensor:
    g = _blur(gray(batch).float(), blur)
    dx, dy = _sobel(g, "reflect101")
    ink = (torch.sqrt(dx * dx + dy * dy) * (scale / 4.0)).clamp_(0.0, 255.0)
    return _to_uint8(255.0 - ink)


def adaptive_threshold(batch: torch.Tensor, *, block_size: int, c: float, method: str) -> torch.Tensor:
    g = gray(batch).float()
    if method == "mean":
        k = np.full(block_size, 1.0 / block_size)
    else:
        k = opencv_block_kernel(block_size)
    mean = torch.round(separable(g, k.astype(np.float32), "replicate"))
    paper = (g - mean) > -math.ceil(c)  # cv2.adaptiveThreshold, THRESH_BINARY
    return paper.to(torch.uint8).squeeze(1) * 255


def dilate_diff(batch: torch.Tensor, *, ksize: int, gain: float) -> torch.Tensor:
    g = gray(batch).float()
    # max_pool pads with -inf: the border is ignored, like cv2.dilate's default border value.
    diff = F.max_pool2d(g, ksize, 1, ksize // 2) - g
    return _to_uint8(255.0 - (diff * gain).clamp_(0.0, 255.0))
