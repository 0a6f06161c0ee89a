"""The loader's settings as one typed object (docs/loader.md, the options table)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import LoaderError


@dataclass(frozen=True)
class LoaderOptions:
    """How to draw, read and decode; checked when made. ``BatchStream(out, n, options)`` or keywords."""

    seed: int = 0
    keys_only: bool = False  # lists of keys, nothing read
    resampled: bool = True  # True: infinite, with replacement; False: one pass
    weighted: bool = True  # False: every sample weight 1
    weights: str | None = None  # the weight version (OUT/weights/NAME.parquet); None: the active one
    epoch: int = 0  # one pass: which epoch (each has its own order)
    epoch_draws: int | None = None  # one pass: how many draws (None: one per sample)
    drop_last: bool | None = None  # keep or drop each bucket's last partial batch; None: drop when resampled
    extractor: str | None = None  # always this extractor's line drawing
    extractor_probs: Mapping[str, float] | None = None  # {name: probability} among a sample's extractors
    decode: bool = True  # False: encoded bytes instead of arrays
    rank: int = 0
    world_size: int = 1
    skip_bad_shards: bool = False  # leave out bad shards and unreadable samples, with a warning
    threads: int = 4  # decode threads per process

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise LoaderError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0 <= self.rank < self.world_size:
            raise LoaderError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if self.epoch_draws is not None and (self.resampled or self.epoch_draws < 1):
            raise LoaderError("epoch_draws is for one-pass mode (resampled=False) and must be >= 1")


__all__ = ["LoaderOptions"]
