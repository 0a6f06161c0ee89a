"""Classical line extractors on CPU (OpenCV/NumPy), one image at a time inside a batch loop.

Each returns white paper (255) and black ink (0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .registry import check_batch, register


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def canny_image(
    rgb: np.ndarray, low: float | None, high: float | None, sigma: float, blur: float
) -> np.ndarray:
    """Canny edges as ink; thresholds fixed, or derived from the median when ``low``/``high`` are None."""
    gray = _gray(rgb)
    if blur > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), blur)
    if low is None or high is None:
        median = float(np.median(gray))
        low = max(0.0, (1.0 - sigma) * median)
        high = min(255.0, (1.0 + sigma) * median)
    edges = cv2.Canny(gray, float(low), float(high))
    return 255 - edges


def xdog_image(rgb: np.ndarray, sigma: float, k: float, p: float, epsilon: float, phi: float) -> np.ndarray:
    """Winnemoeller et al. 2012 XDoG: sharpened DoG, soft-thresholded with tanh."""
    gray = _gray(rgb).astype(np.float32) / 255.0
    g1 = cv2.GaussianBlur(gray, (0, 0), sigma)
    g2 = cv2.GaussianBlur(gray, (0, 0), sigma * k)
    sharpened = (1.0 + p) * g1 - p * g2
    out = np.where(sharpened >= epsilon, 1.0, 1.0 + np.tanh(phi * (sharpened - epsilon)))
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class _PerImage:
    """Adapts a per-image function to the batch contract."""

    name: str
    version: str
    fn: object
    options: dict

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch)
        out = np.empty(batch.shape[:3], dtype=np.uint8)
        for i, img in enumerate(batch):
            out[i] = self.fn(img, **self.options)
        return out


@register(
    "canny",
    kind="classical",
    summary="Canny edges (OpenCV); fixed thresholds or median-derived when low/high are None",
    defaults={"low": 100.0, "high": 200.0, "sigma": 0.33, "blur": 1.0},
)
def _canny(weights=None, device="cpu", **opts):
    return _PerImage("canny", "opencv-1", canny_image, opts)


@register(
    "xdog",
    kind="classical",
    summary="XDoG, Winnemoeller et al. 2012 (OpenCV)",
    defaults={"sigma": 0.8, "k": 1.6, "p": 20.0, "epsilon": 0.7, "phi": 10.0},
)
def _xdog(weights=None, device="cpu", **opts):
    return _PerImage("xdog", "opencv-1", xdog_image, opts)
