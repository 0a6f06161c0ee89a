"""The scorer registry (one instance of ``groundwork.registry.Registry``, as ``lineart``'s extractors).

A scorer is a batched callable over decoded images (a list of ``H x W x 3`` uint8 RGB arrays of any
sizes; it does its own resizing) that returns one list per scan column it fills, each with one entry
per image. Factories take ``weights`` and ``device`` plus their own options.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from groundwork.registry import Entry, Registry


class Scorer(Protocol):
    name: str
    version: str
    columns: tuple[str, ...]  # the scan columns it fills (sharding/schema.py)
    files: dict[str, str]  # role -> sha256 of every checkpoint file it loaded

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]: ...


@dataclass(frozen=True, kw_only=True)
class ScorerInfo(Entry):
    factory: Callable[..., Scorer]
    columns: tuple[str, ...]


class UnknownScorerError(ValueError):
    pass


SCORERS: Registry[ScorerInfo] = Registry("scorer", ScorerInfo, unknown=UnknownScorerError)
# register(name, summary=, columns=, defaults=, check=): a decorator
register = SCORERS.register
available = SCORERS.available
info = SCORERS.info
check_options = SCORERS.check_options
create = SCORERS.create
