"""Pair quality: is a line drawing usable as a training target?

``line_stats`` measures ink density and the connected components of the ink; ``verdict`` says
whether a drawing is empty (next to no ink), drowned (ink everywhere: dark fills, texture, noise
turned into ink), speckled (ink that is mostly isolated dots) or framed (a thin band of ink or grey
along an edge: padding residue a model would learn), with a one-line reason.
Pure functions over ``H x W uint8`` arrays (255 = paper, 0 = ink). Defaults: docs/lineart.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from groundwork.configtable import from_table

VERDICTS = ("ok", "empty", "drowned", "speckled", "framed")


@dataclass(frozen=True)
class PairQuality:
    """Thresholds of the verdict; the build carries them as ``[pair_quality]``."""

    enabled: bool = True
    ink_level: int = 128  # a pixel darker than this is ink
    min_ink: float = 0.002  # ink share under this: empty
    max_ink: float = 0.50  # ink share over this: drowned
    speck_area: int = 4  # components of at most this many pixels are specks
    max_speck_share: float = 0.7  # share of components that are specks ...
    min_specks_per_mpx: float = 10000.0  # ... when there are also this many specks per megapixel: speckled
    frame_width: int = (
        4  # a band of 1..frame_width marked lines along an edge is a frame (wider: a dark border)
    )
    frame_contrast: int = 48  # a pixel this much darker than the paper (the drawing's median) is marked ...
    frame_share: float = 0.9  # ... and a line (row or column) with this share of marked pixels is marked

    def check(self) -> None:
        if not 0 < self.ink_level <= 255:
            raise ValueError(f"pair_quality.ink_level must be in 1..255, got {self.ink_level}")
        if not 0 <= self.min_ink < self.max_ink <= 1:
            raise ValueError(
                f"pair_quality needs 0 <= min_ink < max_ink <= 1, got {self.min_ink}, {self.max_ink}"
            )
        if self.speck_area < 1 or not 0 <= self.max_speck_share <= 1 or self.min_specks_per_mpx < 0:
            raise ValueError(
                "pair_quality: speck_area >= 1, 0 <= max_speck_share <= 1, min_specks_per_mpx >= 0"
            )
        if self.frame_width < 0 or not 0 < self.frame_contrast <= 255 or not 0 < self.frame_share <= 1:
            raise ValueError(
                "pair_quality: frame_width >= 0 (0: no frame check), 0 < frame_contrast <= 255, 0 < frame_share <= 1"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairQuality:
        return from_table(cls, data, "pair_quality")


def frame_sides(lines: np.ndarray, width: int = 4, contrast: int = 48, share: float = 0.9) -> list[str]:
    """The edges ("left", "top", "right", "bottom") along which 1..``width`` consecutive outer lines are
    marked: at least ``share`` of their pixels ``contrast`` darker than the paper (the median)."""
    if width <= 0 or min(lines.shape) <= 2 * width:
        return []
    bands = [("left", lines[:, : width + 1].T), ("top", lines[: width + 1]),
             ("right", lines[:, -width - 1 :].T[::-1]), ("bottom", lines[-width - 1 :][::-1])]  # fmt: skip
    # The paper's median is at most 255, so no pixel is marked unless darker than 255 - contrast:
    # when no outermost line has ``share`` such pixels there is no frame, and the median (a
    # partition of every pixel, most of this check's time) is not needed.
    if not any((band[0] < 255 - contrast).mean() >= share for _, band in bands):
        return []
    level = int(np.median(lines)) - contrast
    found = []
    for side, band in bands:  # only the outer bands are compared, never the whole drawing
        marked = (band.astype(np.int16) < level).mean(axis=1) >= share  # outer line first
        run = int(np.argmin(marked)) if not marked.all() else len(marked)
        if 1 <= run <= width:
            found.append(side)
    return found


def line_stats(lines: np.ndarray, ink_level: int = 128, speck_area: int = 4) -> dict[str, float]:
    """Ink density and connected-component statistics (8-connected ink) of one drawing."""
    if lines.ndim != 2 or lines.dtype != np.uint8:
        raise ValueError(f"expected an H x W uint8 drawing, got {lines.shape} {lines.dtype}")
    lines = np.ascontiguousarray(lines)  # OpenCV's calls below take contiguous rows only
    # ink: 1 where lines < ink_level (0 <= ink_level - 1 < 255 for the valid 1..255)
    ink = cv2.threshold(lines, ink_level - 1, 1, cv2.THRESH_BINARY_INV)[1]
    pixels = lines.size
    ink_px = cv2.countNonZero(ink)
    # Grana's BBDT: the same components as OpenCV's default (Spaghetti) at half its time with
    # stats (2.5 against 4.9 ms a megapixel drawing here, docs/scale.md)
    n, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(ink, 8, cv2.CV_32S, cv2.CCL_BBDT)
    areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the paper
    comps = int(len(areas))
    specks = int((areas <= speck_area).sum())
    mpx = pixels / 1e6
    # OpenCV's sum of the levels is exact, as NumPy's float mean of integers: the same quotient
    mean = cv2.sumElems(lines)[0] / pixels
    return {
        "ink": ink_px / pixels,
        "darkness": float(1.0 - mean / 255.0),
        "components": comps,
        "components_per_mpx": comps / mpx,
        "largest_component_share": float(areas.max() / ink_px) if comps else 0.0,
        "median_component_area": float(np.median(areas)) if comps else 0.0,
        "speck_share": specks / comps if comps else 0.0,
        "specks_per_mpx": specks / mpx,
    }


def verdict(stats: dict[str, Any], q: PairQuality) -> tuple[str, str]:
    """``("ok", "")`` or ``(problem, reason)`` with problem one of "empty", "drowned", "speckled", "framed"."""
    if stats["ink"] < q.min_ink:
        return "empty", f"ink {stats['ink']:.4f} < min_ink {q.min_ink}"
    if stats["ink"] > q.max_ink:
        return "drowned", f"ink {stats['ink']:.3f} > max_ink {q.max_ink}"
    if stats["speck_share"] > q.max_speck_share and stats["specks_per_mpx"] >= q.min_specks_per_mpx:
        return "speckled", (
            f"{stats['speck_share']:.0%} of components are specks of <= {q.speck_area} px "
            f"({stats['specks_per_mpx']:.0f}/Mpx)"
        )
    if stats.get("frame_sides"):
        return (
            "framed",
            f"a band of <= {q.frame_width} px along the {', '.join(stats['frame_sides'])} edge(s)",
        )
    return "ok", ""


def judge(lines: np.ndarray, q: PairQuality) -> tuple[str, str, dict[str, Any]]:
    """``verdict`` of ``line_stats`` and ``frame_sides``: (problem, reason, stats)."""
    stats: dict[str, Any] = dict(line_stats(lines, q.ink_level, q.speck_area))
    stats["frame_sides"] = frame_sides(lines, q.frame_width, q.frame_contrast, q.frame_share)
    problem, reason = verdict(stats, q)
    return problem, reason, stats
