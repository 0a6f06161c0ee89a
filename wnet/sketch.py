"""A user's sketch as the W-net's input (``linepairs sample``): grey, at most the size the model was
trained at, each side a multiple the UNet accepts."""

from __future__ import annotations

import cv2
import numpy as np

from .data import train_size


def sketch_size(size: tuple[int, int], max_side: int, multiple: int) -> tuple[int, int]:
    """(width, height) a ``size`` sketch is painted at: scaled down to ``max_side`` like a training
    bucket (0: kept), then each side rounded to the nearest multiple of ``multiple`` (at least one):
    the UNet halves the size per level."""
    w, h = train_size(size, max_side, multiple)
    return max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple)


def sketch_input(rgb: np.ndarray, max_side: int, multiple: int) -> np.ndarray:
    """H x W uint8 grey sketch from an H x W x 3 RGB one (dark lines on white paper, as decoded by
    ``curation.prepare.load_rgb``), area-resized to ``sketch_size`` where that differs."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    w, h = sketch_size((gray.shape[1], gray.shape[0]), max_side, multiple)
    if (h, w) != gray.shape:
        gray = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA)
    return gray


__all__ = ["sketch_input", "sketch_size"]
