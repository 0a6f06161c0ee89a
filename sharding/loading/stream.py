"""The stream: the stages driven for one rank and worker, with a state that resumes after any batch.

Batch ``j`` of the global stream is a pure function of (build, seed, j), so a stream can start
anywhere: ranks take ``j ≡ rank (mod world_size)``, DataLoader workers split a rank's batches
round-robin, and a saved state resumes exactly where training stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..layout import Layout
from . import lookup
from .batch import Batch, assemble
from .decode import Decoder
from .errors import LoaderError, LoaderStateError
from .extractors import ExtractorChoice
from .options import LoaderOptions
from .population import load_population
from .reader import ShardReader
from .sampler import Sampler

STATE_VERSION = 1


class BatchStream:
    """Iterable of batches (or of key lists); see ``sharding.loader.batches``. Re-iterating starts at ``state``.

    Settings come as a ``LoaderOptions`` or as its fields by keyword (``seed=1, keys_only=True``;
    keywords override the options object).
    """

    def __init__(self, out: Layout | str, batch_size: int, options: LoaderOptions | None = None, *,
                 state: Mapping[str, Any] | None = None, **settings: Any) -> None:  # fmt: skip
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LoaderError(f"batch_size must be a positive integer, got {batch_size!r}")
        options = options or LoaderOptions()
        self.options = opts = replace(options, **settings) if settings else options
        self.batch_size = batch_size
        self.pop, self.layout = load_population(
            out, weighted=opts.weighted, skip_bad_shards=opts.skip_bad_shards, weights=opts.weights
        )
        self.out = self.layout.out
        self.sampler = Sampler(self.pop, batch_size, seed=opts.seed, resampled=opts.resampled, epoch=opts.epoch,
                               epoch_draws=opts.epoch_draws, drop_last=opts.drop_last)  # fmt: skip
        self._settings = {
            "version": STATE_VERSION, "build": self.pop.fingerprint, "seed": opts.seed, "batch_size": batch_size,
            "resampled": opts.resampled, "epoch": opts.epoch, "epoch_draws": opts.epoch_draws,
            "drop_last": self.sampler.drop_last, "rank": opts.rank, "world_size": opts.world_size,
        }  # fmt: skip
        self.extractor_choice = ExtractorChoice(self.pop, opts.seed, opts.extractor, opts.extractor_probs)
        self.decoder = Decoder(opts.decode, opts.skip_bad_shards, opts.threads)
        self.position = 0  # batches of this rank consumed so far
        if state is not None:
            self.load_state_dict(state)
        self._reader: ShardReader | None = None

    # -- state

    def state_dict(self) -> dict[str, Any]:
        return {**self._settings, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        diffs = [
            f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in self._settings.items() if state.get(k) != v
        ]
        if diffs:
            raise LoaderStateError(f"the saved loader state does not match: {'; '.join(diffs)}")
        position = state.get("position")
        if not isinstance(position, int) or position < 0:
            raise LoaderStateError(f"the saved loader state has a bad position {position!r}")
        self.position = position

    # -- positions

    def __len__(self) -> int:
        """Batches this rank yields in one pass (one-pass mode only)."""
        if self.sampler.total is None:
            raise TypeError("a resampled stream is infinite")
        return len(range(self.options.rank, self.sampler.total, self.options.world_size))

    def _local_positions(self, start: int) -> Iterator[int]:
        """Local batch positions for this process: all from ``start``, or this DataLoader worker's share."""
        worker, workers = 0, 1
        if "torch" in sys.modules:
            info = sys.modules["torch"].utils.data.get_worker_info()
            if info is not None:
                worker, workers = info.id, info.num_workers
        # DataLoader takes one batch from each worker in turn, worker 0 first: worker k yields
        # start + k, start + k + workers, ..., so the rank sees start, start + 1, ... in order.
        position = start + worker
        while True:
            yield position
            position += workers

    def _global_index(self, position: int) -> int:
        return self.options.rank + position * self.options.world_size

    def index_batches(self, start: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(local position, bucket index, manifest rows) per batch, without reading any shard."""
        for position in self._local_positions(self.position if start is None else start):
            found = self.sampler.batch(self._global_index(position))
            if found is None:
                return
            yield position, found[0], found[1]

    def __iter__(self) -> Iterator[Batch] | Iterator[list[str]]:
        for position, bucket, rows in self.index_batches():
            self.position = position + 1
            if self.options.keys_only:
                yield self.pop.keys_at(rows)
            else:
                yield self._batch(position, bucket, rows)

    # -- reading

    def reader(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self.layout)
        return self._reader

    def close(self) -> None:
        """Close the open shard files (a later batch reopens them)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _batch(self, position: int, bucket: int, rows: np.ndarray) -> Batch:
        extractors = self.extractor_choice.choose(self._global_index(position), rows)
        shards = [self.pop.shard(r) for r in rows]
        loaded = self.decoder.load_all(self.reader(), shards, self.pop.keys_at(rows), extractors)
        state = {**self._settings, "position": position + 1}
        return assemble(self.pop.buckets[bucket], loaded, extractors, self.options.decode, state)

    # -- random access (sharding/loading/lookup.py)

    def rows_of(self, keys: Sequence[str]) -> list[int | None]:
        """The population row of each key (None: not in the build). One hash of the population's
        keys per call, so look many keys up at once."""
        return lookup.rows_of(self.pop, keys)

    def sample_at(self, row: int) -> dict[str, Any]:
        """The whole sample of population row ``row`` (see ``samples``)."""
        return lookup.sample_at(self.pop, self.reader(), row)

    def samples(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Whole samples by key: {"key", "image" (RGB), "lines" {extractor: gray}, "meta"} (for audits)."""
        return lookup.samples(self.pop, self.reader(), keys, self.out)

    def torch_dataset(self):
        """This stream as a ``torch.utils.data.IterableDataset``: ``DataLoader(ds, batch_size=None, num_workers=K)``."""
        return torch_dataset_class()(self)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without open files
        return {**self.__dict__, "_reader": None}


def torch_dataset_class() -> type:
    """``TorchBatches``, made on first use so that importing the loader does not import torch.

    It is a module attribute (see ``__getattr__``), so spawned DataLoader workers can unpickle it.
    """
    cls = globals().get("TorchBatches")
    if cls is None:
        from torch.utils.data import IterableDataset

        class TorchBatches(IterableDataset):
            def __init__(self, stream: BatchStream) -> None:
                self.stream = stream

            def __iter__(self):
                return iter(self.stream)

        TorchBatches.__module__, TorchBatches.__qualname__ = __name__, "TorchBatches"
        globals()["TorchBatches"] = cls = TorchBatches
    return cls


def __getattr__(name: str) -> Any:
    if name == "TorchBatches":
        return torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["STATE_VERSION", "BatchStream", "torch_dataset_class"]
