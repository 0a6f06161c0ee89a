"""Classical line extractors: an OpenCV path (CPU, one image at a time) and a batched torch path.

Each returns white paper (255) and black ink (0). ``device`` picks the path: ``"cpu"`` runs
OpenCV (kornia/torch on a CPU is orders of magnitude slower for Canny), any other torch device
runs lineart/classical_torch.py. ``backend="torch"`` forces the torch path, also on the CPU
(tests compare the two paths that way); ``backend="opencv"`` forces OpenCV (CPU only).
References and parameters of every operator: docs/lineart.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from . import _lazy_torch_ops as T  # classical_torch on first call: OpenCV-only builds never load torch
from .filters import canny_thresholds, gaussian_kernel, gray_numpy, gray_table, order_statistic, xdog_epsilon
from .registry import check_batch, register

BACKENDS = ("auto", "opencv", "torch")


def _gray(rgb: np.ndarray) -> np.ndarray:
    table, exact = gray_table()
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if exact else gray_numpy(rgb, table)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 image with the kernel both paths share (border reflect-101)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma).astype(np.float32)
    return cv2.sepFilter2D(x, cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT_101)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def canny_image(
    rgb: np.ndarray, *, low: float, high: float, mode: str, sigma: float, blur: float, edge_share: float,
    ratio: float, min_high: float,
) -> np.ndarray:  # fmt: skip
    """Canny (1986) edges as ink, OpenCV's implementation (L1 gradient, 3x3 Sobel); thresholds per
    ``mode`` (filters.canny_thresholds)."""
    gray = _gray(rgb)
    if blur > 0:
        gray = _to_uint8(_blur(gray.astype(np.float32), blur))
    if mode != "gradient":
        lo, hi = canny_thresholds(low, high, mode, sigma, float(np.median(gray)) if mode == "median" else 0.0)
        return 255 - cv2.Canny(gray, lo, hi)
    # The derivatives cv2.Canny computes itself (3x3 Sobel, replicated border), computed once: their L1
    # magnitude sets the thresholds and Canny runs on them (same edges as cv2.Canny(gray, ...)).
    dx = cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    mag = cv2.add(cv2.absdiff(dx, 0).astype(np.uint16), cv2.absdiff(dy, 0).astype(np.uint16))
    stat = order_statistic(mag, 1.0 - edge_share)
    lo, hi = canny_thresholds(low, high, mode, sigma, stat, ratio, min_high)
    return 255 - cv2.Canny(dx, dy, lo, hi)


def xdog_image(
    rgb: np.ndarray,
    *,
    sigma: float,
    k: float,
    p: float,
    epsilon: float,
    phi: float,
    mode: str,
    quantile: float,
) -> np.ndarray:
    """Winnemoeller et al. 2012 XDoG: sharpened DoG ``(1+p) G_sigma - p G_{k sigma}``, soft-thresholded with
    tanh; ``mode="quantile"`` lowers ``epsilon`` to the image's ``quantile`` gray level (filters.xdog_epsilon)."""
    gray8 = _gray(rgb)
    q = order_statistic(gray8, quantile) if mode == "quantile" else 0.0
    epsilon = xdog_epsilon(epsilon, mode, q)
    gray = gray8.astype(np.float32) / np.float32(255.0)
    d = (1.0 + p) * _blur(gray, sigma) - p * _blur(gray, sigma * k)
    out = np.where(d >= epsilon, np.float32(1.0), 1.0 + np.tanh(phi * (d - epsilon)))
    return _to_uint8(out * 255.0)


def dog_image(rgb: np.ndarray, *, sigma: float, k: float, gain: float) -> np.ndarray:
    """Difference of Gaussians (Marr-Hildreth 1980); ink where the narrow blur is darker than the wide one."""
    gray = _gray(rgb).astype(np.float32) / np.float32(255.0)
    ink = np.clip((_blur(gray, sigma * k) - _blur(gray, sigma)) * gain, 0.0, 1.0)
    return _to_uint8((1.0 - ink) * 255.0)


def sobel_image(rgb: np.ndarray, *, blur: float, scale: float) -> np.ndarray:
    """Sobel gradient magnitude as ink; ``scale=1`` maps a step edge of contrast c to ink c."""
    gray = _blur(_gray(rgb).astype(np.float32), blur)
    dx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    dy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    ink = np.clip(np.sqrt(dx * dx + dy * dy) * np.float32(scale / 4.0), 0.0, 255.0)
    return _to_uint8(255.0 - ink)


def adaptive_threshold_image(rgb: np.ndarray, *, block_size: int, c: float, method: str) -> np.ndarray:
    """cv2.adaptiveThreshold (THRESH_BINARY): paper where the pixel is brighter than its local mean - c."""
    kind = cv2.ADAPTIVE_THRESH_MEAN_C if method == "mean" else cv2.ADAPTIVE_THRESH_GAUSSIAN_C
    return cv2.adaptiveThreshold(_gray(rgb), 255, kind, cv2.THRESH_BINARY, block_size, c)


def dilate_diff_image(rgb: np.ndarray, *, ksize: int, gain: float) -> np.ndarray:
    """The sketchKeras-style trick: ``dilate(gray) - gray`` is bright exactly on thin dark strokes."""
    gray = _gray(rgb)
    diff = cv2.dilate(gray, np.ones((ksize, ksize), np.uint8)) - gray  # dilate >= gray: no wrap
    return _to_uint8(255.0 - np.clip(diff.astype(np.float32) * np.float32(gain), 0.0, 255.0))


@dataclass
class ClassicalExtractor:
    """One operator bound to its options and a path; follows the batch contract of lineart.registry."""

    name: str
    version: str
    backend: str  # "opencv" or "torch"
    device: str
    cpu_fn: Callable[..., np.ndarray]
    torch_fn: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    weights_sha256: None = None  # no checkpoint

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = check_batch(batch)
        if self.backend == "opencv":
            out = np.empty(batch.shape[:3], dtype=np.uint8)
            for i, img in enumerate(batch):
                out[i] = self.cpu_fn(img, **self.options)
            return out
        import torch

        # TF32 convolutions (cuDNN's default on recent GPUs) keep ~10 mantissa bits: enough to move
        # rounded blurs and XDoG's steep threshold away from the OpenCV path. Full fp32, deterministic.
        with (
            torch.inference_mode(),
            torch.backends.cudnn.flags(enabled=True, deterministic=True, allow_tf32=False),
        ):
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
            return self.torch_fn(x, **self.options).cpu().numpy()


def _pick_backend(backend: str, device: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_cpu = str(device) == "cpu"
    if backend == "opencv" and not on_cpu:
        raise ValueError(f"backend 'opencv' runs on the CPU only; got device {device!r}")
    if backend == "auto":
        return "opencv" if on_cpu else "torch"
    return backend


def _positive(opts: dict[str, Any], *names: str) -> None:
    for n in names:
        if not opts[n] > 0:
            raise ValueError(f"option {n} must be > 0, got {opts[n]!r}")


def _odd(opts: dict[str, Any], name: str, minimum: int) -> None:
    v = opts[name]
    if v < minimum or v % 2 == 0:
        raise ValueError(f"option {name} must be an odd integer >= {minimum}, got {v!r}")


def _classical(name: str, version: str, summary: str, defaults: dict[str, Any], check: Callable[[dict], None],
               cpu_fn: Callable[..., np.ndarray], torch_fn: Callable[..., Any]) -> None:  # fmt: skip
    def full_check(opts: dict[str, Any]) -> None:
        _pick_backend(opts["backend"], "cpu")
        check(opts)

    def factory(weights=None, device="cpu", backend="auto", **opts):
        if weights is not None:
            raise ValueError(f"extractor {name!r} is classical and takes no weights (got {weights!r})")
        check(opts)
        chosen = _pick_backend(backend, device)
        return ClassicalExtractor(name, version, chosen, str(device), cpu_fn, torch_fn, opts)

    register(
        name, kind="classical", summary=summary, defaults={**defaults, "backend": "auto"}, check=full_check
    )(factory)


def _check_canny(o):
    if o["mode"] not in ("fixed", "median", "gradient"):
        raise ValueError(f"option mode must be 'fixed', 'median' or 'gradient', got {o['mode']!r}")
    if min(o["low"], o["high"], o["sigma"], o["blur"], o["min_high"]) < 0:
        raise ValueError("options low, high, sigma, blur and min_high must be >= 0")
    if not 0 < o["edge_share"] < 1 or not 0 < o["ratio"] <= 1:
        raise ValueError(
            f"options need 0 < edge_share < 1 and 0 < ratio <= 1, got {o['edge_share']}, {o['ratio']}"
        )


_classical(
    "canny", "3", "Canny edges (OpenCV's algorithm); thresholds from the gradient's quantile (mode='gradient'), "
    "the median ('median') or fixed ('fixed')",
    {"low": 100.0, "high": 200.0, "mode": "gradient", "sigma": 0.33, "blur": 1.0, "edge_share": 0.1,
     "ratio": 0.5, "min_high": 40.0},
    _check_canny, canny_image, T.canny,
)  # fmt: skip


def _check_xdog(o):
    _positive(o, "sigma", "k", "phi")
    if o["mode"] not in ("fixed", "quantile"):
        raise ValueError(f"option mode must be 'fixed' or 'quantile', got {o['mode']!r}")
    if not 0 <= o["quantile"] <= 1:
        raise ValueError(f"option quantile must be in [0, 1], got {o['quantile']!r}")


_classical(
    "xdog", "3", "XDoG, Winnemoeller et al. 2012: sharpened DoG with a tanh soft threshold; "
    "epsilon capped at the image's quantile gray level (mode='quantile'; 'fixed': as before)",
    {"sigma": 0.8, "k": 1.6, "p": 20.0, "epsilon": 0.7, "phi": 10.0, "mode": "quantile", "quantile": 0.1},
    _check_xdog, xdog_image, T.xdog,
)  # fmt: skip
_classical(
    "dog", "1", "Difference of Gaussians: ink where G(sigma) is darker than G(k*sigma)",
    {"sigma": 1.0, "k": 1.6, "gain": 12.0},
    lambda o: _positive(o, "sigma", "k", "gain"), dog_image, T.dog,
)  # fmt: skip


def _check_sobel(o):
    _positive(o, "scale")
    if o["blur"] < 0:
        raise ValueError(f"option blur must be >= 0, got {o['blur']!r}")


_classical(
    "sobel", "1", "Sobel gradient magnitude as ink (soft lines)",
    {"blur": 1.0, "scale": 2.5},
    _check_sobel, sobel_image, T.sobel,
)  # fmt: skip


def _check_adaptive(o):
    _odd(o, "block_size", 3)
    if o["method"] not in ("gaussian", "mean"):
        raise ValueError(f"option method must be 'gaussian' or 'mean', got {o['method']!r}")


_classical(
    "adaptive_threshold", "1", "Adaptive threshold against the local (Gaussian or mean) neighbourhood",
    {"block_size": 11, "c": 8.0, "method": "gaussian"},
    _check_adaptive, adaptive_threshold_image, T.adaptive_threshold,
)  # fmt: skip


def _check_dilate_diff(o):
    _odd(o, "ksize", 3)
    _positive(o, "gain")


_classical(
    "dilate_diff", "1", "dilate(gray) - gray, the sketchKeras-style stroke extraction",
    {"ksize": 3, "gain": 3.0},
    _check_dilate_diff, dilate_diff_image, T.dilate_diff,
)  # fmt: skip
