"""Shared pieces of the classical operators: Gaussian kernels, gray conversion, border rules.

Both paths (OpenCV per image on the CPU, batched torch anywhere) take their kernels from here so
that they convolve with the same numbers and can only differ by float rounding.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

# Fixed-point RGB->gray weights (R, G, B, shift) OpenCV has used for 8-bit images: 5.0 uses 15 bits,
# 4.x used 14 (imgproc/color.hpp). ``gray_table`` finds the one the installed OpenCV uses.
_GRAY_TABLES = ((9798, 19235, 3735, 15), (4899, 9617, 1868, 14), (19595, 38470, 7471, 16))


def gray_numpy(rgb: np.ndarray, table: tuple[int, int, int, int]) -> np.ndarray:
    r, g, b, shift = table
    x = rgb.astype(np.int32)
    return ((x[..., 0] * r + x[..., 1] * g + x[..., 2] * b + (1 << (shift - 1))) >> shift).astype(np.uint8)


@functools.cache
def gray_table() -> tuple[tuple[int, int, int, int], bool]:
    """(weights, whether cv2.cvtColor computes exactly them); without an exact match the OpenCV path
    converts with numpy so that both paths still see the same gray image."""
    probe = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    want = cv2.cvtColor(probe, cv2.COLOR_RGB2GRAY)
    for table in _GRAY_TABLES:
        if np.array_equal(gray_numpy(probe, table), want):
            return table, True
    return _GRAY_TABLES[0], False


# cv::getGaussianKernel uses these tables for odd ksize <= 7 when sigma <= 0 (adaptiveThreshold does).
_SMALL_GAUSSIAN = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def gaussian_kernel(sigma: float, truncate: float = 3.0) -> np.ndarray:
    """Normalised 1-D Gaussian, radius ``ceil(truncate * sigma)`` (at least 1), float64."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(truncate * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def opencv_block_kernel(ksize: int) -> np.ndarray:
    """The kernel cv::getGaussianKernel(ksize, sigma=0) returns: what adaptiveThreshold blurs with."""
    if ksize in _SMALL_GAUSSIAN:
        return np.asarray(_SMALL_GAUSSIAN[ksize], dtype=np.float64)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def canny_thresholds(
    low: float, high: float, mode: str, sigma: float, stat: float, ratio: float = 0.5, min_high: float = 40.0
) -> tuple[int, int]:
    """Integer (low, high) as cv2.Canny uses them (it floors, and swaps them when low > high).

    ``mode="fixed"`` uses ``low``/``high``. ``mode="median"`` derives them from ``stat``, the median
    intensity: ``(1 -/+ sigma) * median``, the usual automatic-Canny recipe. ``mode="gradient"``
    takes ``stat`` to be the image's L1 gradient magnitude at its ``1 - edge_share`` quantile, so
    that about ``edge_share`` of the pixels are strong-edge candidates whatever the contrast:
    ``high = max(stat, min_high)`` (the floor keeps flat images from turning noise into lines),
    ``low = ratio * high``.
    """
    if mode == "median":
        low, high = max(0.0, (1.0 - sigma) * stat), min(255.0, (1.0 + sigma) * stat)
    elif mode == "gradient":
        high = max(stat, min_high)
        low = ratio * high
    lo, hi = math.floor(low), math.floor(high)
    return (hi, lo) if lo > hi else (lo, hi)


def order_statistic(values: np.ndarray, q: float) -> float:
    """The value at rank ``floor(q * (n - 1))`` of the sorted ``values`` (numpy's "lower" quantile):
    an element of the data, so the OpenCV and torch paths agree exactly."""
    flat = np.asarray(values).ravel()
    k = math.floor(q * (flat.size - 1))
    if flat.dtype.kind in "ui" and flat.size and 0 <= flat.min() and flat.max() < 1 << 16:
        # small non-negative integers (gray levels, L1 gradients): a histogram is several times faster
        return float(np.searchsorted(np.cumsum(np.bincount(flat)), k + 1))
    return float(np.partition(flat, k)[k])


def xdog_epsilon(epsilon: float, mode: str, gray_quantile: float) -> float:
    """XDoG's threshold on gray in [0, 1]. ``mode="quantile"`` caps ``epsilon`` at the image's
    ``quantile`` gray level (``gray_quantile``, 0..255): in flat areas the sharpened DoG is the gray
    itself, so at most about that share of a dark picture turns into solid fill, while a bright one
    keeps ``epsilon``. ``mode="fixed"`` is the plain threshold."""
    return min(epsilon, gray_quantile / 255.0) if mode == "quantile" else epsilon
