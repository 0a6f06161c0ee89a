"""NovelAI-style aspect buckets: the one place for the bucket rule.

The published rule (NovelAI, "Aspect ratio bucketing", 2022): walk one side from ``min_side``
to ``max_side`` in steps of ``step``; the other side is the largest multiple of ``step`` that
keeps the area within ``max_area`` (capped at ``max_side``); take both orientations, plus the
largest square within the area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketRule:
    max_area: int = 512 * 768
    step: int = 64
    min_side: int = 256
    max_side: int = 1024

    def check(self) -> None:
        if self.step <= 0 or self.min_side <= 0 or self.max_side < self.min_side:
            raise ValueError(f"bad bucket rule {self}: need step > 0 and 0 < min_side <= max_side")
        if self.min_side * self.min_side > self.max_area:
            raise ValueError(f"bad bucket rule {self}: min_side^2 exceeds max_area")


def make_buckets(rule: BucketRule) -> list[tuple[int, int]]:
    """All (width, height) buckets of ``rule``, sorted by aspect ratio then area."""
    rule.check()
    found: set[tuple[int, int]] = set()
    side = rule.min_side
    while side <= rule.max_side:
        other = min(rule.max_side, (rule.max_area // side) // rule.step * rule.step)
        if other >= rule.min_side:
            found.add((side, other))
            found.add((other, side))
        side += rule.step
    # Square images deserve a square bucket: the largest square within the area (NovelAI adds one too).
    square = min(rule.max_side, math.isqrt(rule.max_area) // rule.step * rule.step)
    if square >= rule.min_side:
        found.add((square, square))
    return sorted(found, key=lambda wh: (wh[0] / wh[1], wh[0] * wh[1]))


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket nearest in log aspect ratio; ties go to the larger area, then the wider."""
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1], -b[0]))


def crop_box(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int, int, int]:
    """Centered crop (left, top, right, bottom) of the original with the bucket's aspect ratio."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    cw = min(width, max(1, round(bw / scale)))
    ch = min(height, max(1, round(bh / scale)))
    left = (width - cw) // 2
    top = (height - ch) // 2
    return left, top, left + cw, top + ch
