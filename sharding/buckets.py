"""NovelAI-style aspect buckets: the one place for the bucket rule.

The published rule (NovelAI, "Aspect ratio bucketing", 2022): walk one side from ``min_side``
to ``max_side`` in steps of ``step``; the other side is the largest multiple of ``step`` that
keeps the area within ``max_area`` (capped at ``max_side``); take both orientations, plus the
largest square within the area.

``max_upscale`` (kohya's ``bucket_no_upscale`` idea, relaxed): an image is never enlarged by more
than this to fill its bucket. One that would need more gets a smaller bucket of the same shape,
generated for it (sides floored to ``step``), or, when even ``min_side`` is too big, no bucket:
the plan rejects it as ``too_small_for_bucket``.

Presets (``[buckets] preset``): NovelAI-style sets for the model sizes people train, at the areas
those models were trained at (SD 1.x 512², SD 2.x 768², SDXL and its descendants 1024²). The default
rule (no preset) is NovelAI's own SD 1 set, area 512×768. Keys given beside a preset override it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BucketRule:
    preset: str = ""  # a name of PRESETS whose values this rule starts from; "" = the defaults below
    max_area: int = 512 * 768
    step: int = 64
    min_side: int = 256
    max_side: int = 1024
    # 1.25: a bicubic x1.25 is invisible at training resolution, and the buckets stay the standard
    # ones for every image of 0.8x the bucket or more (docs/curation.md); 0 = no limit (old behaviour).
    max_upscale: float = 1.25

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketRule:
        """``[buckets]`` of build.toml: a ``preset``'s values, then the keys given beside it (strict)."""
        from groundwork.configtable import from_table

        rule = from_table(cls, dict(data), "buckets")  # unknown keys and wrong types are refused here
        if not rule.preset:
            return rule
        rule = dataclasses.replace(PRESETS[rule.preset], **dict(data))
        rule.check()
        return rule

    @property
    def largest_area(self) -> int:
        """The area of the largest bucket this rule makes."""
        return max(w * h for w, h in make_buckets(self))

    def check(self) -> None:
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"buckets.preset {self.preset!r} is unknown; known: {', '.join(PRESETS)}")
        if self.step <= 0 or self.min_side <= 0 or self.max_side < self.min_side:
            raise ValueError(f"bad bucket rule {self}: need step > 0 and 0 < min_side <= max_side")
        if self.max_upscale != 0 and self.max_upscale < 1:
            raise ValueError(f"buckets.max_upscale must be 0 (no limit) or >= 1, got {self.max_upscale}")
        if self.min_side * self.min_side > self.max_area:
            raise ValueError(f"bad bucket rule {self}: min_side^2 exceeds max_area")


# Sides from half to twice the square side, step 64 (SDXL's published buckets span 512..2048 at 1024²).
PRESETS: dict[str, BucketRule] = {
    "sd15": BucketRule("sd15", max_area=512 * 512, step=64, min_side=256, max_side=1024),
    "sd2": BucketRule("sd2", max_area=768 * 768, step=64, min_side=384, max_side=1536),
    "sdxl": BucketRule("sdxl", max_area=1024 * 1024, step=64, min_side=512, max_side=2048),
}


def preset_for(side: int) -> str | None:
    """The smallest preset whose buckets reach a ``side``² training resolution (None: none does)."""
    fitting = [name for name, rule in PRESETS.items() if rule.largest_area >= side * side]
    return min(fitting, key=lambda name: PRESETS[name].max_area) if fitting else None


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


def bucket_upscale(width: int, height: int, bucket: tuple[int, int]) -> float:
    """How much the image is enlarged to cover ``bucket`` (< 1: it is reduced)."""
    return max(bucket[0] / width, bucket[1] / height)


def fit_bucket(
    width: int, height: int, buckets: list[tuple[int, int]], rule: BucketRule
) -> tuple[tuple[int, int], float] | None:
    """(bucket, upscale) of an image under ``rule.max_upscale``; None when no bucket fits (too small)."""
    bucket = nearest_bucket(width, height, buckets)
    up = bucket_upscale(width, height, bucket)
    if not rule.max_upscale or up <= rule.max_upscale * (1 + 1e-9):
        return bucket, up
    shrink = rule.max_upscale / up
    smaller = tuple(int(side * shrink) // rule.step * rule.step for side in bucket)
    if min(smaller) < rule.min_side:
        return None
    return (smaller[0], smaller[1]), bucket_upscale(width, height, smaller)


def crop_box(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int, int, int]:
    """Centered crop (left, top, right, bottom) of the original with the bucket's aspect ratio."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    cw = min(width, max(1, round(bw / scale)))
    ch = min(height, max(1, round(bh / scale)))
    left = (width - cw) // 2
    top = (height - ch) // 2
    return left, top, left + cw, top + ch
