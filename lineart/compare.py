"""How close a drawing is to an artist's line art: edge F1 with a tolerance, Chamfer distance, ink ratio.

Both drawings are binarised (ink = darker than ``ink_level``) and thinned to 1-px centre lines, so
a thick and a thin stroke along the same path count as the same line. A thinned pixel of one
drawing is matched when a thinned pixel of the other lies within ``tolerance`` px (Euclidean):
precision = matched share of the drawing's line pixels, recall = matched share of the reference's.
Chamfer is the symmetric mean of those nearest-line distances, each truncated at ``CHAMFER_CAP``
px so that one empty drawing or one far-off blob cannot dominate an average. Pure functions over
``H x W uint8`` arrays (255 = paper, 0 = ink). Method and figures: docs/lineart.md.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize

TOLERANCE = 2.0  # px
CHAMFER_CAP = 16.0  # px


def ink_mask(drawing: np.ndarray, ink_level: int = 128) -> np.ndarray:
    """Boolean ink of an ``H x W uint8`` drawing."""
    if drawing.ndim != 2 or drawing.dtype != np.uint8:
        raise ValueError(f"expected an H x W uint8 drawing, got {drawing.shape} {drawing.dtype}")
    return drawing < ink_level


def thin(ink: np.ndarray) -> np.ndarray:
    """1-px centre lines of a boolean ink mask (Zhang-Suen style skeleton, scikit-image)."""
    return skeletonize(ink) if ink.any() else np.zeros_like(ink, dtype=bool)


def _distance_to(lines: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest ``True`` of ``lines`` (inf without lines)."""
    if not lines.any():
        return np.full(lines.shape, np.inf, np.float32)
    return cv2.distanceTransform((~lines).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def reference_lines(reference: np.ndarray, size: tuple[int, int], ink_level: int = 128) -> np.ndarray:
    """An artist's drawing (any size, ink dark or light) as a uint8 drawing of ``size`` (W, H).

    A map with light lines on a dark ground (Canny or HED maps) is inverted first. Shrinking goes
    through the ink mask: a pixel is ink when at least a quarter of its area was ink, so that 1-px
    lines of a large reference survive the shrink.
    """
    gray = reference if reference.ndim == 2 else cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY)
    if np.median(gray) < 128:
        gray = 255 - gray
    ink = (gray < ink_level).astype(np.float32)
    if ink.shape[::-1] != tuple(size):
        ink = cv2.resize(ink, size, interpolation=cv2.INTER_AREA)
    return np.where(ink >= 0.25, 0, 255).astype(np.uint8)


def edge_scores(
    drawing: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE, ink_level: int = 128
) -> dict[str, float]:
    """precision, recall, f1, chamfer (px) and ink_ratio (drawing's ink share / the reference's)."""
    if drawing.shape != reference.shape:
        raise ValueError(f"drawing {drawing.shape} and reference {reference.shape} differ in size")
    ink_d, ink_r = ink_mask(drawing, ink_level), ink_mask(reference, ink_level)
    line_d, line_r = thin(ink_d), thin(ink_r)
    dist_to_r, dist_to_d = _distance_to(line_r), _distance_to(line_d)
    n_d, n_r = int(line_d.sum()), int(line_r.sum())
    precision = float((dist_to_r[line_d] <= tolerance).mean()) if n_d else 0.0
    recall = float((dist_to_d[line_r] <= tolerance).mean()) if n_r else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    def mean_capped(d: np.ndarray) -> float:
        return float(np.minimum(d, CHAMFER_CAP).mean()) if d.size else CHAMFER_CAP

    chamfer = 0.5 * (mean_capped(dist_to_r[line_d]) + mean_capped(dist_to_d[line_r]))
    share_r = float(ink_r.mean())
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "chamfer": chamfer,
        "ink_ratio": float(ink_d.mean()) / share_r if share_r else float("inf"),
    }
