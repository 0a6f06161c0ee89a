"""The extractor registry (one instance of ``groundwork.registry.Registry``).

An extractor is a callable over a batch: ``N x H x W x 3 uint8 RGB -> N x H x W uint8``,
255 = paper, 0 = ink. Factories take ``weights`` and ``device`` plus their own options.

A batch holds images of one size (it is one array). Images of mixed sizes are an error that
says so; ``extract_each`` groups a list of images by size and returns one drawing per image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from groundwork.registry import Entry, Registry


class Extractor(Protocol):
    name: str
    version: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, kw_only=True)
class ExtractorInfo(Entry):
    factory: Callable[..., Extractor]
    kind: str  # "classical" or "learned"


class UnknownExtractorError(ValueError):
    pass


# The learned networks (lineart.nets, torch) register on first need: the package sets ``discover``
# (lineart/__init__.py), so this module does not reach up into the networks that register here.
EXTRACTORS: Registry[ExtractorInfo] = Registry("extractor", ExtractorInfo, unknown=UnknownExtractorError)
# register(name, kind=, summary=, defaults=, check=): a decorator; check(options) validates values
register = EXTRACTORS.register
info = EXTRACTORS.info
check_options = EXTRACTORS.check_options
create = EXTRACTORS.create


def available(kind: str | None = None) -> list[str]:
    """Names of every registered extractor (or of one ``kind``: "classical", "learned"), sorted."""
    return EXTRACTORS.available(None if kind is None else lambda e: e.kind == kind)


def check_batch(batch: Any) -> np.ndarray:
    """Validate the batch contract once, in one place."""
    if isinstance(batch, list | tuple) and len({getattr(b, "shape", None) for b in batch}) > 1:
        sizes = sorted({tuple(getattr(b, "shape", ())) for b in batch})
        raise ValueError(
            f"a batch holds images of one size, got {len(sizes)} sizes {sizes[:4]}; "
            "stack same-size images, or use lineart.extract_each(extractor, images), which groups by size"
        )
    batch = np.asarray(batch)
    if batch.ndim == 3 and batch.shape[-1] == 3:
        raise ValueError(f"expected a batch N x H x W x 3, got one image {batch.shape}: pass image[None]")
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected an N x H x W x 3 uint8 RGB batch, got {batch.shape} {batch.dtype}")
    return batch


def extract_each(
    extractor: Extractor, images: Sequence[np.ndarray], batch_size: int = 16
) -> list[np.ndarray]:
    """One drawing per ``H x W x 3`` image of any size: groups same-size images into batches of at
    most ``batch_size`` and returns the drawings in input order."""
    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        by_size[tuple(np.shape(img))].append(i)
    out: list[np.ndarray | None] = [None] * len(images)
    for idx in by_size.values():
        for start in range(0, len(idx), batch_size):
            part = idx[start : start + batch_size]
            drawings = extractor(np.stack([images[i] for i in part]))
            for i, d in zip(part, drawings, strict=True):
                out[i] = d
    return out  # type: ignore[return-value]
