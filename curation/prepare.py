"""An image file as the commands and the scorecard look at it: decoded by the scan's decoder, then
shrunk (never enlarged) so that its longer side is at most a given size."""

from __future__ import annotations

import cv2
import numpy as np

from .decode import DEFAULT_MAX_BYTES, decode_image, read_bytes


def shrink_to(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side`` (INTER_AREA averages); never enlarged;
    0 keeps the size. The sides round to the nearest pixel, at least 1."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def load_rgb(path: str, max_side: int = 0, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """The image at ``path`` as H x W x 3 uint8 RGB (transparency flattened onto white, EXIF turns
    applied, 16-bit scaled: ``decode.decode_image``), shrunk to ``max_side`` (0: full size).

    Raises FileNotFoundError, OSError (unreadable, too large) or ``DecodeReject`` (not an image)."""
    return shrink_to(decode_image(read_bytes(path, max_bytes)).rgb, max_side)


__all__ = ["load_rgb", "shrink_to"]
