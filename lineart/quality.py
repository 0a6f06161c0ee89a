"""Pair quality: is a line drawing usable as a training target?

``line_stats`` measures ink density and the connected components of the ink; ``verdict`` says
whether a drawing is empty (next to no ink), drowned (ink everywhere: dark fills, texture, noise
turned into ink) or speckled (ink that is mostly isolated dots), with a one-line reason.
Pure functions over ``H x W uint8`` arrays (255 = paper, 0 = ink). Defaults: docs/lineart.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curation.configtable import from_table

VERDICTS = ("ok", "empty", "drowned", "speckled")


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairQuality:
        return from_table(cls, data, "pair_quality")


def line_stats(lines: np.ndarray, ink_level: int = 128, speck_area: int = 4) -> dict[str, float]:
    """Ink density and connected-component statistics (8-connected ink) of one drawing."""
    if lines.ndim != 2 or lines.dtype != np.uint8:
        raise ValueError(f"expected an H x W uint8 drawing, got {lines.shape} {lines.dtype}")
    ink = (lines < ink_level).astype(np.uint8)
    pixels = lines.size
    ink_px = int(ink.sum())
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the paper
    comps = int(len(areas))
    specks = int((areas <= speck_area).sum())
    mpx = pixels / 1e6
    return {
        "ink": ink_px / pixels,
        "darkness": float(1.0 - lines.mean() / 255.0),
        "components": comps,
        "components_per_mpx": comps / mpx,
        "largest_component_share": float(areas.max() / ink_px) if comps else 0.0,
        "median_component_area": float(np.median(areas)) if comps else 0.0,
        "speck_share": specks / comps if comps else 0.0,
        "specks_per_mpx": specks / mpx,
    }


def verdict(stats: dict[str, float], q: PairQuality) -> tuple[str, str]:
    """``("ok", "")`` or ``(problem, reason)`` with problem one of "empty", "drowned", "speckled"."""
    if stats["ink"] < q.min_ink:
        return "empty", f"ink {stats['ink']:.4f} < min_ink {q.min_ink}"
    if stats["ink"] > q.max_ink:
        return "drowned", f"ink {stats['ink']:.3f} > max_ink {q.max_ink}"
    if stats["speck_share"] > q.max_speck_share and stats["specks_per_mpx"] >= q.min_specks_per_mpx:
        return "speckled", (
            f"{stats['speck_share']:.0%} of components are specks of <= {q.speck_area} px "
            f"({stats['specks_per_mpx']:.0f}/Mpx)"
        )
    return "ok", ""


def judge(lines: np.ndarray, q: PairQuality) -> tuple[str, str, dict[str, float]]:
    """``verdict`` of ``line_stats``: (problem, reason, stats)."""
    stats = line_stats(lines, q.ink_level, q.speck_area)
    problem, reason = verdict(stats, q)
    return problem, reason, stats
