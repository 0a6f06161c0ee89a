"""The scorer registry: one name -> one factory, like ``lineart``'s extractor registry.

A scorer is a batched callable over decoded images (a list of ``H x W x 3`` uint8 RGB arrays of any
sizes; it does its own resizing) that returns one list per scan column it fills, each with one entry
per image. Factories take ``weights`` and ``device`` plus their own options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Scorer(Protocol):
    name: str
    version: str
    columns: tuple[str, ...]  # the scan columns it fills (sharding/schema.py)
    files: dict[str, str]  # role -> sha256 of every checkpoint file it loaded

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]: ...


@dataclass(frozen=True)
class ScorerInfo:
    name: str
    factory: Callable[..., Scorer]
    summary: str
    columns: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], None] | None = None  # raises ValueError on bad option values


_REGISTRY: dict[str, ScorerInfo] = {}


class UnknownScorerError(ValueError):
    pass


def register(name: str, *, summary: str, columns: tuple[str, ...], defaults: dict[str, Any] | None = None,
             check: Callable[[dict[str, Any]], None] | None = None):  # fmt: skip
    """Decorator: register ``factory`` under ``name``."""

    def wrap(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        if name in _REGISTRY:
            raise ValueError(f"scorer {name!r} registered twice")
        _REGISTRY[name] = ScorerInfo(name, factory, summary, columns, dict(defaults or {}), check)
        return factory

    return wrap


def available() -> list[str]:
    """Names of every registered scorer, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> ScorerInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownScorerError(f"unknown scorer {name!r}; available: {', '.join(available())}") from None


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` merged over the defaults; unknown names raise TypeError, bad values ValueError."""
    entry = info(name)
    unknown = set(options) - set(entry.defaults)
    if unknown:
        raise TypeError(
            f"scorer {name!r} has no option(s) {sorted(unknown)}; known: {sorted(entry.defaults)}"
        )
    merged = dict(entry.defaults)
    for key, value in options.items():
        default = entry.defaults[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ValueError(f"scorer {name!r}: option {key} must be {type(default).__name__}, got {value!r}")
        merged[key] = value
    if entry.check is not None:
        try:
            entry.check(merged)
        except ValueError as exc:
            raise ValueError(f"scorer {name!r}: {exc}") from None
    return merged


def create(name: str, weights: str | None = None, device: str = "cpu", **options: Any) -> Scorer:
    """Build scorer ``name``; unknown or ill-typed options are an error, not silently ignored."""
    merged = check_options(name, options)
    return info(name).factory(weights=weights, device=device, **merged)
