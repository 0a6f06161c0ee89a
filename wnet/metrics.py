"""Line-drawing agreement: tolerant edge F-score and symmetric Chamfer distance (OpenCV distance transforms).

Ink is a pixel darker than 128 (255 paper, 0 ink). A predicted ink pixel counts as correct when a
reference ink pixel lies within ``tolerance`` pixels (BSDS-style matching relaxed to a distance
threshold; default 0.75% of the image diagonal, at least 1 px). Chamfer distance is the mean of the
two directed mean distances in pixels; an image with no ink on one side scores the diagonal.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _distance_to_ink(ink: np.ndarray) -> np.ndarray:
    # distanceTransform measures the distance to the nearest zero pixel: make ink the zeros.
    return cv2.distanceTransform(np.where(ink, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def default_tolerance(h: int, w: int) -> float:
    return max(1.0, 0.0075 * math.hypot(h, w))


def pair_scores(pred: np.ndarray, ref: np.ndarray, tolerance: float | None = None) -> tuple[float, float]:
    """(F-score, Chamfer) for two H x W uint8 line drawings."""
    if pred.shape != ref.shape:
        raise ValueError(f"line drawings differ in size: {pred.shape} vs {ref.shape}")
    h, w = pred.shape
    tol = default_tolerance(h, w) if tolerance is None else tolerance
    diag = math.hypot(h, w)
    p_ink, r_ink = pred < 128, ref < 128
    if not p_ink.any() and not r_ink.any():
        return 1.0, 0.0
    if not p_ink.any() or not r_ink.any():
        return 0.0, diag
    d_to_ref, d_to_pred = _distance_to_ink(r_ink)[p_ink], _distance_to_ink(p_ink)[r_ink]
    precision = float(np.mean(d_to_ref <= tol))
    recall = float(np.mean(d_to_pred <= tol))
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f1, float(d_to_ref.mean() + d_to_pred.mean()) / 2


def edge_scores(pred: np.ndarray, ref: np.ndarray, tolerance: float | None = None) -> dict[str, float]:
    """Mean F-score and Chamfer distance over N x H x W batches of line drawings."""
    scores = np.array([pair_scores(p, r, tolerance) for p, r in zip(pred, ref, strict=True)])
    return {"f1": float(scores[:, 0].mean()), "chamfer": float(scores[:, 1].mean())}


def mismatched(lines: np.ndarray) -> np.ndarray:
    """Each drawing paired with another sample's (a roll by one): the chance baseline."""
    if len(lines) < 2:
        raise ValueError("a mismatched baseline needs at least two samples")
    return np.roll(lines, 1, axis=0)


__all__ = ["default_tolerance", "edge_scores", "mismatched", "pair_scores"]
