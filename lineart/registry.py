"""The extractor registry: one name -> one factory, timm-style.

An extractor is a callable over a batch: ``N x H x W x 3 uint8 RGB -> N x H x W uint8``,
255 = paper, 0 = ink. Factories take ``weights`` and ``device`` plus their own options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Extractor(Protocol):
    name: str
    version: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ExtractorInfo:
    name: str
    factory: Callable[..., Extractor]
    kind: str  # "classical" or "learned"
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ExtractorInfo] = {}


class UnknownExtractorError(ValueError):
    pass


def register(name: str, *, kind: str, summary: str, defaults: dict[str, Any] | None = None):
    """Decorator: register ``factory`` under ``name``."""

    def wrap(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        if name in _REGISTRY:
            raise ValueError(f"extractor {name!r} registered twice")
        _REGISTRY[name] = ExtractorInfo(name, factory, kind, summary, dict(defaults or {}))
        return factory

    return wrap


def available() -> list[str]:
    """Names of every registered extractor, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> ExtractorInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownExtractorError(
            f"unknown extractor {name!r}; available: {', '.join(available())}"
        ) from None


def create(name: str, weights: str | None = None, device: str = "cpu", **options: Any) -> Extractor:
    """Build extractor ``name``; unknown options are an error, not silently ignored."""
    entry = info(name)
    unknown = set(options) - set(entry.defaults)
    if unknown:
        raise TypeError(
            f"extractor {name!r} has no option(s) {sorted(unknown)}; known: {sorted(entry.defaults)}"
        )
    return entry.factory(weights=weights, device=device, **{**entry.defaults, **options})


def check_batch(batch: np.ndarray) -> np.ndarray:
    """Validate the batch contract once, in one place."""
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected an N x H x W x 3 uint8 RGB batch, got {batch.shape} {batch.dtype}")
    return batch
