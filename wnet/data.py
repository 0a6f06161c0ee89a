"""Training data, read only through ``sharding.loader``: the run's buckets, its held-out split, its seed.

Held-out samples are a fixed fraction of the keys (by a hash of the key, so any build and any
process agree). They are dropped from every training batch: the draws that remain are still in
proportion to the weights among the training samples, and the batch stays bucket-pure.
Batches in buckets the config does not train on are skipped by position, before any shard is read.

Training batches are decoded at the training size, not the bucket size: the loader hands over the
encoded members (``decode=False``), a JPEG is decoded by libjpeg's scaled IDCT (1/2, 1/4 or 1/8, never
below the training size) and area-resized the rest of the way, and every decoded member is kept at
training size in a bounded in-memory cache (PNG has no reduced decode, so a line drawing is decoded
in full once per run). A background thread prepares the next batches while the model steps. Each
decoded array is a pure function of the member's bytes and the size, so a resumed run (cold cache)
sees exactly the arrays a straight run saw.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from sharding.layout import Layout
from sharding.loader import Batch, BatchStream, ShardError, batches

from .config import WnetConfig

HOLDOUT_BUCKETS = 10_000
CACHE_BYTES = 256 << 20  # decoded training-size members kept per stream (tiny at 64 px: ~12 KiB a sample)
PREFETCH = 2  # batches prepared ahead of the model
_JPEG_MAGIC = b"\xff\xd8\xff"
_REDUCED = {  # libjpeg's scaled decodes: factor -> (colour flag, grey flag)
    8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
}


def is_heldout(key: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h % HOLDOUT_BUCKETS < round(fraction * HOLDOUT_BUCKETS)


def heldout_keys(
    build: str | Layout, fraction: float, buckets: list[tuple[int, int]] | None = None
) -> list[str]:
    layout = build if isinstance(build, Layout) else Layout(build)
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


@dataclass
class TrainBatch(Batch):
    """A training batch; ``latents`` (N x 2 x C x h x w: the picture and its mirror image) when the
    latent cache supplies them, and then ``images`` is None (not decoded)."""

    latents: np.ndarray | None = None


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


def fit_batch(batch: Batch, cfg: WnetConfig, multiple: int) -> Batch:
    """Area-resize a decoded batch's illustrations and line drawings to the config's training size
    (``multiple``: what every side must divide by, ``Parts.multiple``)."""
    h, w = batch.images.shape[1:3]
    size = train_size((w, h), cfg.train.max_side, multiple)
    if size == (w, h):
        return batch
    images = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in batch.images])
    lines = np.stack([cv2.resize(ln, size, interpolation=cv2.INTER_AREA) for ln in batch.lines])
    return replace(batch, images=images, lines=lines)


def reduction(stored: tuple[int, int], size: tuple[int, int]) -> int:
    """The largest JPEG scale-down (8, 4, 2 or 1) whose output still covers ``size`` on both sides."""
    for factor in _REDUCED:
        if all(-(-s // factor) >= t for s, t in zip(stored, size, strict=True)):
            return factor
    return 1


def decode_at(data: bytes, stored: tuple[int, int], size: tuple[int, int], color: bool) -> np.ndarray:
    """An encoded member (stored at ``stored`` = (w, h)) decoded to ``size``: RGB (``color``) or grey uint8.

    A JPEG is decoded reduced (libjpeg's scaled IDCT) when that stays at least ``size``; PNG and WebP
    are decoded in full. The rest of the way is an area resize. Raises ValueError if it does not decode.
    """
    factor = reduction(stored, size) if data[:3] == _JPEG_MAGIC else 1
    if factor > 1:
        flag = _REDUCED[factor][0 if color else 1]
    else:
        flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    out = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if out is None:
        raise ValueError(f"{'illustration' if color else 'line drawing'} does not decode")
    if (out.shape[1], out.shape[0]) != size:
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if color else out


class DecodeCache:
    """Members decoded at training size, by (key, member, size); least recently used out past ``max_bytes``."""

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self._items: OrderedDict[tuple[str, str, tuple[int, int]], np.ndarray] = OrderedDict()

    def get(self, key: tuple[str, str, tuple[int, int]], make) -> np.ndarray:
        found = self._items.get(key)
        if found is not None:
            self.hits += 1
            self._items.move_to_end(key)
            return found
        self.misses += 1
        found = make()
        found.setflags(write=False)  # shared by every batch that draws it
        self._items[key] = found
        self.bytes += found.nbytes
        while self.bytes > self.max_bytes and len(self._items) > 1:
            self.bytes -= self._items.popitem(last=False)[1].nbytes
        return found


def decode_batch(
    batch: Batch, keep: list[int], size: tuple[int, int], cache: DecodeCache, images: bool = True
) -> TrainBatch:
    """The samples ``keep`` of an encoded batch (``decode=False``), decoded at ``size`` (the
    illustrations only with ``images``: the latent cache needs none).

    A member that does not decode is a ShardError naming the sample (as the loader's own decode)."""
    stored = batch.bucket

    def member(i: int, name: str, data: bytes, color: bool) -> np.ndarray:
        try:
            return cache.get((batch.keys[i], name, size), lambda: decode_at(data, stored, size, color))
        except ValueError as exc:
            raise ShardError(f"sample {batch.keys[i]}: {exc}") from None

    pictures = [member(i, "image", batch.image_bytes[i], True) for i in keep] if images else None
    lines = [member(i, f"lines.{batch.extractors[i]}", batch.line_bytes[i], False) for i in keep]
    return TrainBatch(
        keys=[batch.keys[i] for i in keep],
        bucket=batch.bucket,
        images=np.stack(pictures) if images else None,
        lines=np.stack(lines),
        extractors=[batch.extractors[i] for i in keep],
        meta=[batch.meta[i] for i in keep],
        state=batch.state,
    )


class _End:
    """What the prefetch thread queues after the last batch, or with the error that stopped it."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


class TrainStream:
    """Endless training batches for one rank, decoded at training size, ``prefetch`` batches ahead.

    ``state()`` resumes right after the last batch returned (not the last one prefetched);
    ``wait_s`` is the time ``next`` spent waiting for data, the part of a step decode did not hide.
    """

    def __init__(
        self, stream: BatchStream, buckets: list[tuple[int, int]] | None, heldout: float, cfg: WnetConfig,
        multiple: int, prefetch: int = PREFETCH, cache: DecodeCache | None = None, latents: Any = None,
    ):  # fmt: skip
        self.stream, self.heldout, self.cfg, self.prefetch = stream, heldout, cfg, prefetch
        self.wanted = set(buckets) if buckets else None
        self.multiple = multiple
        self.latents = latents  # a wnet.latents.LatentCache, or None
        self.cache = cache if cache is not None else DecodeCache()
        self.wait_s = 0.0
        self._state = stream.state_dict()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._end: _End | None = None

    def __iter__(self) -> Iterator[Batch]:
        return self

    def _produce(self) -> Batch:
        """The next training batch, read and decoded (in the prefetch thread when there is one)."""
        while True:
            if self.wanted is not None:
                for position, bucket, _ in self.stream.index_batches():
                    if self.stream.pop.buckets[bucket] in self.wanted:
                        break
                    self.stream.position = position + 1  # skipped without reading a shard
            batch = next(iter(self.stream))
            keep = [i for i, k in enumerate(batch.keys) if not is_heldout(k, self.heldout)]
            if keep:
                size = train_size(batch.bucket, self.cfg.train.max_side, self.multiple)
                out = decode_batch(batch, keep, size, self.cache, images=self.latents is None)
                if self.latents is not None:
                    rows = self.stream.rows_of(out.keys)
                    shards = [self.stream.pop.shard(r) for r in rows]
                    out.latents = self.latents.get(shards, out.keys, size)
                return out

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._put(self._produce())
        except BaseException as exc:  # noqa: BLE001 - the producer thread hands every ending to the consumer, which raises it
            self._put(_End(None if isinstance(exc, StopIteration) else exc))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __next__(self) -> Batch:
        if self._end is not None:
            raise self._end.error or StopIteration
        started = time.perf_counter()
        if self.prefetch <= 0:
            batch = self._produce()
        else:
            if self._thread is None:
                self._queue = queue.Queue(self.prefetch)
                self._thread = threading.Thread(target=self._run, name="wnet-prefetch", daemon=True)
                self._thread.start()
            item = self._queue.get()
            if isinstance(item, _End):
                self._end = item
                raise item.error or StopIteration
            batch = item
        self.wait_s += time.perf_counter() - started
        self._state = batch.state
        return batch

    def state(self) -> dict[str, Any]:
        return dict(self._state)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a put
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread = None
        self.stream.close()


def open_stream(
    build: str | Layout, cfg: WnetConfig, multiple: int, *, rank: int = 0, world: int = 1,
    state: dict[str, Any] | None = None, buckets: list[tuple[int, int]] | None = None, seed_offset: int = 0,
    prefetch: int = PREFETCH, latents: Any = None,
) -> TrainStream:  # fmt: skip
    t = cfg.train
    # Encoded members only: TrainStream decodes them at training size (threads=1: reading is cheap).
    stream = batches(build, t.batch_size, seed=t.seed + seed_offset, extractor=t.extractor, rank=rank,
                     world_size=world, state=state, threads=1, decode=False, weights=t.weights)  # fmt: skip
    return TrainStream(stream, buckets, t.heldout, cfg, multiple, prefetch, latents=latents)


def heldout_batch(
    build: str | Layout, cfg: WnetConfig, limit: int, buckets: list[tuple[int, int]] | None, multiple: int
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
        ), cfg, multiple))  # fmt: skip
    return out


__all__ = [
    "DecodeCache",
    "TrainStream",
    "decode_at",
    "decode_batch",
    "fit_batch",
    "heldout_batch",
    "heldout_keys",
    "is_heldout",
    "open_stream",
    "reduction",
    "TrainBatch",
    "train_size",
]
