"""Random access: population rows by key, and whole samples (illustration, every line drawing, json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .decode import decode_whole
from .errors import LoaderError
from .population import Population
from .reader import ShardReader


def rows_of(pop: Population, keys: Sequence[str]) -> list[int | None]:
    """The population row of each key (None: not in the build). One hash of the population's keys
    per call, so look many keys up at once."""
    return pc.index_in(pa.array(list(keys), pa.string()), value_set=pop.keys).to_pylist()


def sample_at(pop: Population, reader: ShardReader, row: int) -> dict[str, Any]:
    """The whole sample of population row ``row``: {"key", "image" (RGB), "lines" {extractor: gray}, "meta"}."""
    return decode_whole(reader.sample(pop.shard(row), pop.key(row), pop.extractors(row)))


def samples(pop: Population, reader: ShardReader, keys: Sequence[str], out: str) -> list[dict[str, Any]]:
    """Whole samples by key (see ``sample_at``); a key that build ``out`` lacks is a LoaderError."""
    rows = rows_of(pop, keys)
    for key, r in zip(keys, rows, strict=True):
        if r is None:
            raise LoaderError(f"no sample {key} in {out}")
    return [sample_at(pop, reader, r) for r in rows]


__all__ = ["rows_of", "sample_at", "samples"]
