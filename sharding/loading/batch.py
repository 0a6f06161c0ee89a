"""The batch stage: the samples of one bucket stacked into a ``Batch``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decode import PairSample


@dataclass
class Batch:
    """One bucket-pure batch. Arrays are None when ``decode=False`` (then the ``*_bytes`` are set)."""

    keys: list[str]
    bucket: tuple[int, int]  # (width, height)
    images: np.ndarray | None  # N×H×W×3 uint8 RGB
    lines: np.ndarray | None  # N×H×W uint8, 255 = paper, 0 = ink; one line drawing per sample
    extractors: list[str]  # the extractor of each line drawing
    meta: list[dict[str, Any]]  # each sample's json
    image_bytes: list[bytes] | None = None  # encoded illustration (jpg/webp) when decode=False
    line_bytes: list[bytes] | None = None  # encoded PNG when decode=False
    state: dict[str, Any] = field(
        default_factory=dict
    )  # pass to batches(state=...) to resume after this batch

    def __len__(self) -> int:
        return len(self.keys)


def assemble(bucket: tuple[int, int], samples: Sequence[PairSample | None], extractors: Sequence[str],
             decode: bool, state: dict[str, Any]) -> Batch:  # fmt: skip
    """The batch of ``samples`` (a ``None``, a sample skipped, is left out with its extractor)."""
    keep = [i for i, s in enumerate(samples) if s is not None]
    loaded = [samples[i] for i in keep]
    common = {"keys": [s.key for s in loaded], "bucket": bucket, "extractors": [extractors[i] for i in keep],
              "meta": [s.meta for s in loaded], "state": state}  # fmt: skip
    if not decode:
        return Batch(images=None, lines=None, image_bytes=[s.image for s in loaded],
                     line_bytes=[s.line for s in loaded], **common)  # fmt: skip
    w, h = bucket
    images = np.stack([s.image for s in loaded]) if loaded else np.zeros((0, h, w, 3), np.uint8)
    lines = np.stack([s.line for s in loaded]) if loaded else np.zeros((0, h, w), np.uint8)
    return Batch(images=images, lines=lines, **common)


__all__ = ["Batch", "assemble"]
