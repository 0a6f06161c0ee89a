"""Drawings side by side: one contact sheet of an image and its labelled line drawings
(``linepairs extract --all``)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

LABEL_HEIGHT = 28  # px under each tile for its name


def contact_sheet(
    image: np.ndarray, drawings: Sequence[tuple[str, np.ndarray]], columns: int = 4
) -> np.ndarray:
    """The RGB ``image`` and each labelled H x W uint8 drawing of the same size, in a grid of equal
    tiles (``columns`` at most, rows as needed), each framed and named underneath; RGB uint8."""
    h, w = image.shape[:2]
    tiles = [("input", image)] + [(name, cv2.cvtColor(d, cv2.COLOR_GRAY2RGB)) for name, d in drawings]
    cols = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (h + LABEL_HEIGHT), cols * w, 3), 255, np.uint8)
    for i, (name, tile) in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * (h + LABEL_HEIGHT), c * w
        sheet[y : y + h, x : x + w] = tile
        cv2.rectangle(sheet, (x, y), (x + w - 1, y + h - 1), (200, 200, 200), 1)
        cv2.putText(
            sheet, name, (x + 6, y + h + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA
        )
    return sheet


__all__ = ["LABEL_HEIGHT", "contact_sheet"]
