"""Training data, read only through ``sharding.loader``: the run's buckets, its held-out split, its seed.

Held-out samples are a fixed fraction of the keys (by a hash of the key, so any build and any
process agree). They are dropped from every training batch: the draws that remain are still in
proportion to the weights among the training samples, and the batch stays bucket-pure.
Batches in buckets the config does not train on are skipped by position, before any shard is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from sharding.layout import Layout
from sharding.loader import Batch, BatchStream, batches

from .config import WnetConfig
from .space import space_stride

HOLDOUT_BUCKETS = 10_000


def is_heldout(key: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h % HOLDOUT_BUCKETS < round(fraction * HOLDOUT_BUCKETS)


def heldout_keys(build: str, fraction: float, buckets: list[tuple[int, int]] | None = None) -> list[str]:
    layout = Layout(build)
    table = layout.read_parquet(layout.manifest, columns=["key", "bucket_w", "bucket_h"])
    wanted = set(buckets) if buckets else None
    return [
        k
        for k, w, h in zip(
            table["key"].to_pylist(),
            table["bucket_w"].to_pylist(),
            table["bucket_h"].to_pylist(),
            strict=True,
        )
        if is_heldout(k, fraction) and (wanted is None or (w, h) in wanted)
    ]


def _subset(batch: Batch, keep: list[int]) -> Batch:
    return replace(
        batch,
        keys=[batch.keys[i] for i in keep],
        images=batch.images[keep],
        lines=batch.lines[keep],
        extractors=[batch.extractors[i] for i in keep],
        meta=[batch.meta[i] for i in keep],
    )


def train_size(bucket: tuple[int, int], max_side: int, multiple: int) -> tuple[int, int]:
    """The size a bucket is trained at: the bucket, or scaled to ``max_side`` with sides rounded to ``multiple``."""
    w, h = bucket
    if not max_side or max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return (
        max(multiple, round(w * scale / multiple) * multiple),
        max(multiple, round(h * scale / multiple) * multiple),
    )


def fit_batch(batch: Batch, cfg: WnetConfig) -> Batch:
    """Area-resize a batch's illustrations and line drawings to the config's training size."""
    multiple = 2 ** (len(cfg.model.channels) - 1) * space_stride(cfg.space.vae)
    h, w = batch.images.shape[1:3]
    size = train_size((w, h), cfg.train.max_side, multiple)
    if size == (w, h):
        return batch
    images = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in batch.images])
    lines = np.stack([cv2.resize(ln, size, interpolation=cv2.INTER_AREA) for ln in batch.lines])
    return replace(batch, images=images, lines=lines)


class TrainStream:
    """Endless training batches for one rank; ``state()`` resumes right after the last batch returned."""

    def __init__(
        self, stream: BatchStream, buckets: list[tuple[int, int]] | None, heldout: float, cfg: WnetConfig
    ):
        self.stream, self.heldout, self.cfg = stream, heldout, cfg
        self.wanted = set(buckets) if buckets else None

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        while True:
            if self.wanted is not None:
                for position, bucket, _ in self.stream.index_batches():
                    if self.stream.pop.buckets[bucket] in self.wanted:
                        break
                    self.stream.position = position + 1  # skipped without reading a shard
            batch = next(iter(self.stream))
            keep = [i for i, k in enumerate(batch.keys) if not is_heldout(k, self.heldout)]
            if keep:
                return fit_batch(batch if len(keep) == len(batch.keys) else _subset(batch, keep), self.cfg)

    def state(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def close(self) -> None:
        self.stream.close()


def open_stream(
    build: str, cfg: WnetConfig, *, rank: int = 0, world: int = 1, state: dict[str, Any] | None = None,
    buckets: list[tuple[int, int]] | None = None, seed_offset: int = 0,
) -> TrainStream:  # fmt: skip
    t = cfg.train
    stream = batches(build, t.batch_size, seed=t.seed + seed_offset, extractor=t.extractor, rank=rank,
                     world_size=world, state=state, threads=2, weights=t.weights)  # fmt: skip
    return TrainStream(stream, buckets, t.heldout, cfg)


def heldout_batch(
    build: str, cfg: WnetConfig, limit: int, buckets: list[tuple[int, int]] | None = None
) -> list[Batch]:
    """Held-out samples grouped by bucket into batches (at most ``limit`` samples in all)."""
    keys = heldout_keys(build, cfg.train.heldout, buckets)[:limit]
    if not keys:
        return []
    stream = batches(build, 1, seed=cfg.train.seed, extractor=cfg.train.extractor)
    samples = stream.samples(keys)
    groups: dict[tuple[int, int], list[dict]] = {}
    for s in samples:
        groups.setdefault(tuple(s["meta"]["bucket"]), []).append(s)
    out = []
    for bucket, group in sorted(groups.items()):
        extractor = cfg.train.extractor or sorted(group[0]["lines"])[0]
        out.append(fit_batch(Batch(
            keys=[s["key"] for s in group], bucket=bucket,
            images=np.stack([s["image"] for s in group]),
            lines=np.stack([s["lines"][extractor] for s in group]),
            extractors=[extractor] * len(group), meta=[s["meta"] for s in group],
        ), cfg))  # fmt: skip
    return out


__all__ = [
    "TrainStream",
    "fit_batch",
    "heldout_batch",
    "heldout_keys",
    "is_heldout",
    "open_stream",
    "train_size",
]
