"""The one way to read a build for training: bucket-pure batches whose draws realise the weights.

Sampling works on the manifest alone (no tar is opened to decide what to draw):

* **Resampled** (default, infinite): batch ``j`` of the global stream takes its bucket from a
  schedule cut in blocks of ``SCHEDULE_BLOCK`` batches, each block allocated to buckets by
  systematic sampling over the bucket weights (so bucket counts are exact to one batch per block
  and unbiased), then draws ``batch_size`` samples with replacement within that bucket in
  proportion to their weight. Equivalently: a (bucket, tier) group of samples is picked in
  proportion to its total weight, then a sample within it by its residual weight; each draw
  lands on sample ``i`` with probability ``w_i / Σw``.
* **One pass** (``resampled=False``): an epoch of ``epoch_draws`` draws whose per-sample counts
  are the expected counts rounded by systematic sampling (weighted) or exactly one per sample
  (``weighted=False``), shuffled within each bucket, cut into batches, batches shuffled.

Every batch ``j`` is a pure function of (build, seed, j), so a stream can start anywhere: ranks
take ``j ≡ rank (mod world_size)``, DataLoader workers split a rank's batches round-robin, and a
saved ``state`` resumes exactly where training stopped. Sampling is global (the whole manifest
is the shuffle buffer), so no streaming shuffle buffer is needed.

Reading: members are fetched by offset from an index of each tar's headers, through OUT's
filesystem (``sharding.layout``: local paths, ``s3://`` and other URLs).

This module is the front door; the stages live in ``sharding.loading`` (population -> sampler ->
reader -> decode -> batch, and ``lookup`` for random access), and every name callers import from
here stays here.
"""

from __future__ import annotations

from typing import Any

from groundwork.contract import IMAGE_EXTS

from .layout import Layout
from .loading.batch import Batch
from .loading.decode import decode_gray, decode_rgb
from .loading.errors import REPAIR_HINT, LoaderError, LoaderStateError, ShardError
from .loading.options import LoaderOptions
from .loading.population import Population, load_population, open_filesystem, open_layout, shard_problems
from .loading.reader import ShardReader
from .loading.sampler import SCHEDULE_BLOCK, systematic_counts
from .loading.stream import STATE_VERSION, BatchStream, torch_dataset_class


def batches(
    out: Layout | str, batch_size: int, seed: int = 0, keys_only: bool = False, **options: Any
) -> BatchStream:
    """Bucket-pure, weight-true batches from the build in ``out`` (a path, a URL or a ``Layout``).

    Options (keyword; the fields of ``LoaderOptions``): ``resampled`` (True: infinite; False: one
    pass), ``weighted``, ``epoch``, ``epoch_draws``, ``drop_last``, ``extractor`` (always this one) or
    ``extractor_probs`` ({name: probability}), ``decode`` (False: encoded bytes), ``rank``/``world_size``,
    ``skip_bad_shards``, ``threads`` (decode threads), ``weights`` (a weight version name; default: the
    active one); and ``state`` (from ``Batch.state`` or ``BatchStream.state_dict()``). See docs/loader.md.
    """
    if "options" in options:  # its seed and keys_only would be overridden by the defaults above, unseen
        raise TypeError(
            "batches() takes settings as keywords; pass a LoaderOptions to BatchStream(out, n, options)"
        )
    return BatchStream(out, batch_size, seed=seed, keys_only=keys_only, **options)


def __getattr__(name: str) -> Any:
    if name == "TorchBatches":  # made on first use, so that importing the loader does not import torch
        return torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGE_EXTS", "REPAIR_HINT", "SCHEDULE_BLOCK", "STATE_VERSION", "Batch", "BatchStream", "LoaderError",
    "LoaderOptions", "LoaderStateError", "Population", "ShardError", "ShardReader", "batches", "decode_gray",
    "decode_rgb", "load_population", "open_filesystem", "open_layout", "shard_problems", "systematic_counts",
]  # fmt: skip
