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
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import sys
import tarfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from groundwork.contract import IMAGE_EXTS, drawing_member

from . import samplejson
from .integrity import check_bytes, check_size, read_shards, recorded_files
from .layout import MANIFEST, SHARDS_JSON, DamagedFileError, Layout, StorageError, first_line, storage_fault
from .layout import open_filesystem as _open_filesystem
from .weights import WeightsVersionError, read_version

SCHEDULE_BLOCK = 64  # batches per bucket-schedule block
STATE_VERSION = 1
_MANIFEST_COLUMNS = ["key", "source", "shard", "bucket_w", "bucket_h", "extractors"]
# Stream tags of the counter-based RNG: rng([seed, TAG, j]) is independent for every (tag, j).
_BLOCK, _BATCH, _EXTRACTOR, _EPOCH = 1, 2, 3, 4


# What to do about a damaged table: the build command restores what the rest of OUT can rebuild.
REPAIR_HINT = "run the build command again to repair it (`linepairs verify OUT` lists every fault)"


class LoaderError(ValueError):
    """A build that cannot be read as asked; the message says what and where."""


class ShardError(LoaderError):
    """A shard is missing, truncated or unreadable; the message names it."""


class LoaderStateError(LoaderError):
    """A saved state that does not belong to this build or these loader settings."""


@dataclass
class Batch:
    """One bucket-pure batch. Arrays are None when ``decode=False`` (then the ``*_bytes`` are set)."""

    keys: list[str]
    bucket: tuple[int, int]  # (width, height)
    images: np.ndarray | None  # N×H×W×3 uint8 RGB
    lines: np.ndarray | None  # N×H×W uint8, 255 = paper, 0 = ink; one line drawing per sample
    extractors: list[str]  # the extractor of each line drawing
    meta: list[dict[str, Any]]  # each sample's json
    image_bytes: list[bytes] | None = None  # encoded illustration (jpg/webp) when decode=False
    line_bytes: list[bytes] | None = None  # encoded PNG when decode=False
    state: dict[str, Any] = field(
        default_factory=dict
    )  # pass to batches(state=...) to resume after this batch

    def __len__(self) -> int:
        return len(self.keys)


# ---------------------------------------------------------------- filesystem


def open_filesystem(out: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local path or a URL (``sharding.layout.open_filesystem``)."""
    try:
        return _open_filesystem(out)
    except StorageError as exc:
        raise LoaderError(str(exc)) from None


def open_layout(out: Layout | str) -> Layout:
    """OUT's layout; a URL that cannot be opened is a LoaderError."""
    if isinstance(out, Layout):
        return out
    try:
        return Layout(out)
    except StorageError as exc:
        raise LoaderError(str(exc)) from None


# ---------------------------------------------------------------- population


@dataclass
class Population:
    """The manifest as arrays, grouped by bucket; what the sampler draws from.

    Text columns are dictionary codes (``sources[i]`` indexes ``source_names``) to keep a
    many-million-sample manifest small; keys stay an Arrow array, taken per batch.
    """

    keys: pa.Array  # str
    sources: np.ndarray  # int codes into source_names
    source_names: list[str]
    tiers: np.ndarray  # int codes into tier_names
    tier_names: list[str]
    shards: np.ndarray  # int codes into shard_names (paths relative to OUT)
    shard_names: list[str]
    extractor_sets: np.ndarray  # int codes into extractor_names
    extractor_names: list[tuple[str, ...]]
    weights: np.ndarray  # float64
    bucket_of: np.ndarray  # int: index into ``buckets``
    buckets: list[tuple[int, int]]
    members: list[np.ndarray]  # per bucket: sample rows
    cumulative: list[np.ndarray]  # per bucket: cumulative weights of ``members``
    bucket_weight: np.ndarray  # per bucket: total weight
    fingerprint: str  # identifies the build and the samples in play
    skipped: list[str]  # shards left out (skip_bad_shards)
    weights_name: str = ""  # the weight version in play (sharding/weights.py)

    def __len__(self) -> int:
        return len(self.keys)

    def key(self, row: int) -> str:
        return self.keys[int(row)].as_py()

    def shard(self, row: int) -> str:
        return self.shard_names[self.shards[row]]

    def extractors(self, row: int) -> tuple[str, ...]:
        return self.extractor_names[self.extractor_sets[row]]


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[Any]]:
    encoded = pa.chunked_array(column).combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), encoded.dictionary.to_pylist()


def shard_problems(layout: Layout, shards: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Shards that are missing or whose size differs from shards.json: path -> what is wrong."""
    sizes = layout.sizes([layout.shard(s["path"]) for s in shards])
    problems = {}
    for entry, size in zip(shards, sizes, strict=True):
        if size is None:
            problems[entry["path"]] = "missing"
        elif size != entry["bytes"]:
            problems[entry["path"]] = (
                f"{size} bytes, shards.json says {entry['bytes']} (truncated or changed)"
            )
    return problems


def load_population(
    out: Layout | str, *, weighted: bool = True, skip_bad_shards: bool = False, weights: str | None = None
) -> tuple[Population, Layout]:
    """The manifest joined with weight version ``weights`` (None: the active one) as a Population."""
    layout = open_layout(out)
    out = layout.out
    try:
        shards_raw = layout.read_bytes(layout.shards_json)
        files = recorded_files(layout)
        # shards.json is read whole: its sha256 is checked; the manifest only by size (a cut, a
        # swap) and by its parquet page CRCs as its columns are read (flipped bits).
        check_bytes(layout, SHARDS_JSON, shards_raw, files)
        shards = read_shards(layout, shards_raw)
        check_size(layout, MANIFEST, files)
        table = layout.read_parquet(layout.manifest, columns=_MANIFEST_COLUMNS)
    except FileNotFoundError as exc:
        raise LoaderError(
            f"{out} is not a finished build (no manifest.parquet / shards.json): {exc}"
        ) from None
    except DamagedFileError as exc:
        raise LoaderError(f"{exc}: {REPAIR_HINT}") from None
    except OSError as exc:  # the store cannot be reached or refuses: an outage, not an unfinished build
        raise LoaderError(f"cannot read {out}: {storage_fault(exc) or first_line(exc)}") from None
    try:  # a manifest or shards.json naming ../elsewhere/x.tar is refused before anything is opened
        for rel in {s["path"] for s in shards} | set(table["shard"].unique().to_pylist()):
            layout.shard(rel)
    except StorageError as exc:
        raise LoaderError(f"{out}: {exc}") from None
    try:
        weights_name, version, _ = read_version(layout, weights, keys=table["key"])
    except WeightsVersionError as exc:
        raise LoaderError(f"{out}: {exc}") from None
    table = table.append_column("tier", version["tier"]).append_column("weight", version["weight"])
    problems = shard_problems(layout, shards)
    if problems and not skip_bad_shards:
        listed = "; ".join(f"{p}: {why}" for p, why in sorted(problems.items()))
        raise ShardError(
            f"{len(problems)} bad shard(s) in {out}: {listed} (pass skip_bad_shards=True to leave them out)"
        )
    if problems:
        warnings.warn(
            f"leaving out {len(problems)} bad shard(s): {', '.join(sorted(problems))}", stacklevel=3
        )
        table = table.filter(pc.invert(pc.is_in(table["shard"], pa.array(sorted(problems)))))
    if table.num_rows == 0:
        raise LoaderError(f"{out} has no samples to draw")

    weights = table["weight"].to_numpy().astype(np.float64) if weighted else np.ones(table.num_rows)
    with np.errstate(over="ignore"):
        total = weights.sum()
    # A total that overflows (two weights of 1e308) would leave every other sample a zero share.
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not 0 < total < np.inf:
        raise LoaderError(
            f"{out}: weight version {weights_name!r} must hold finite weights >= 0 whose sum is finite "
            f"and > 0: {REPAIR_HINT}"
        )
    width = table["bucket_w"].to_numpy().astype(np.int64)
    height = table["bucket_h"].to_numpy().astype(np.int64)
    sizes, bucket_of = np.unique(np.stack([width, height], 1), axis=0, return_inverse=True)
    bucket_of = bucket_of.reshape(-1)
    # The manifest's row order is fixed by the build (plan order), so member order is too.
    members = [np.flatnonzero(bucket_of == b) for b in range(len(sizes))]
    cumulative = [np.cumsum(weights[m]) for m in members]
    sources, source_names = _codes(table["source"])
    tiers, tier_names = _codes(table["tier"])
    shard_codes, shard_names = _codes(table["shard"])
    ex_sets, ex_names = _codes(pc.binary_join(table["extractors"], "\n"))
    # The weights in play are part of the identity: a saved state does not resume onto other weights.
    material = json.dumps([weighted, sorted(problems)] + ([weights_name] if weighted else [])).encode()
    digest = hashlib.sha256(shards_raw + material)
    if weighted:
        digest.update(weights.tobytes())
    fingerprint = digest.hexdigest()[:16]
    pop = Population(
        keys=table["key"].combine_chunks(),
        sources=sources,
        source_names=source_names,
        tiers=tiers,
        tier_names=tier_names,
        shards=shard_codes,
        shard_names=shard_names,
        extractor_sets=ex_sets,
        extractor_names=[tuple(x.split("\n")) if x else () for x in ex_names],
        weights=weights,
        bucket_of=bucket_of,
        buckets=[(int(w), int(h)) for w, h in sizes],
        members=members,
        cumulative=cumulative,
        bucket_weight=np.asarray([c[-1] for c in cumulative]),
        fingerprint=fingerprint,
        skipped=sorted(problems),
        weights_name=weights_name,
    )
    return pop, layout


# ---------------------------------------------------------------- sampling


def _rng(seed: int, tag: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag, index])


def systematic_counts(weights: np.ndarray, total: int, u: float) -> np.ndarray:
    """Counts summing to ``total``, each the floor or ceiling of ``total * w / Σw``; unbiased over u ~ U[0, 1)."""
    cum = np.cumsum(weights, dtype=np.float64)
    cum *= total / cum[-1]
    points = u + np.arange(total)
    picked = np.minimum(np.searchsorted(cum, points, side="right"), len(weights) - 1)
    return np.bincount(picked, minlength=len(weights))


def _draw_in_bucket(pop: Population, bucket: int, n: int, rng: np.random.Generator) -> np.ndarray:
    cum = pop.cumulative[bucket]
    at = np.searchsorted(cum, rng.random(n) * cum[-1], side="right")
    return pop.members[bucket][np.minimum(at, len(cum) - 1)]


class _Plan:
    """The global batch sequence: ``batch(j) -> (bucket, rows)``, or None past the end of a pass."""

    def __init__(self, pop: Population, batch_size: int, seed: int, resampled: bool, epoch: int,
                 epoch_draws: int | None, drop_last: bool) -> None:  # fmt: skip
        self.pop, self.batch_size, self.seed, self.resampled = pop, batch_size, seed, resampled
        self._block: tuple[int, np.ndarray] | None = None
        self.total: int | None = None
        if not resampled:
            self._one_pass(epoch, epoch_draws, drop_last)

    def _one_pass(self, epoch: int, epoch_draws: int | None, drop_last: bool) -> None:
        pop = self.pop
        rng = _rng(self.seed, _EPOCH, epoch)
        draws = len(pop) if epoch_draws is None else epoch_draws
        if epoch_draws is None and np.all(pop.weights == pop.weights[0]):
            counts = np.ones(len(pop), np.int64)
        else:
            counts = systematic_counts(pop.weights, draws, float(rng.random()))
        batches: list[tuple[int, np.ndarray]] = []
        for b, members in enumerate(pop.members):
            rows = np.repeat(members, counts[members])
            rows = rows[rng.permutation(len(rows))]
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not drop_last:
                    batches.append((b, chunk))
        self.batches = [batches[i] for i in rng.permutation(len(batches))]
        self.total = len(self.batches)

    def bucket_schedule(self, block: int) -> np.ndarray:
        if self._block is None or self._block[0] != block:
            rng = _rng(self.seed, _BLOCK, block)
            counts = systematic_counts(self.pop.bucket_weight, SCHEDULE_BLOCK, float(rng.random()))
            slots = np.repeat(np.arange(len(counts)), counts)
            self._block = (block, slots[rng.permutation(SCHEDULE_BLOCK)])
        return self._block[1]

    def batch(self, j: int) -> tuple[int, np.ndarray] | None:
        if not self.resampled:
            return self.batches[j] if j < self.total else None
        bucket = int(self.bucket_schedule(j // SCHEDULE_BLOCK)[j % SCHEDULE_BLOCK])
        return bucket, _draw_in_bucket(self.pop, bucket, self.batch_size, _rng(self.seed, _BATCH, j))


# ---------------------------------------------------------------- reading


class ShardReader:
    """Random access to sample members by key, through an index of each tar's headers.

    Thread-safe: each shard has a lock held while its handle seeks or reads (some filesystems,
    fsspec's memory one among them, hand out one shared file position per path); decoding, the
    expensive part, happens outside.
    """

    def __init__(self, layout: Layout, max_open: int = 64) -> None:
        self.layout, self.max_open = layout, max_open
        self._index: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
        self._files: OrderedDict[str, Any] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _shard_lock(self, shard: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(shard, threading.Lock())

    def _file(self, shard: str):
        """The shard's open handle (call with the shard's lock held)."""
        with self._lock:
            fh = self._files.get(shard)
            if fh is not None:
                self._files.move_to_end(shard)
                return fh
        try:
            fh = self.layout.open_input_file(self.layout.shard(shard))
        except (FileNotFoundError, OSError) as exc:
            raise ShardError(f"shard {shard}: cannot open ({exc})") from None
        with self._lock:
            self._files[shard] = fh
            while len(self._files) > self.max_open:
                # Dropped, not closed: a thread may still be reading it; it closes when released.
                self._files.popitem(last=False)
        return fh

    def _build_index(self, shard: str, fh) -> dict[str, dict[str, tuple[int, int]]]:
        size = fh.size()
        entries: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            fh.seek(0)
            with tarfile.open(fileobj=fh, mode="r:") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    key, dot, ext = info.name.partition(".")
                    if not dot or "/" in info.name:
                        continue
                    if info.offset_data + info.size > size:
                        raise ShardError(f"shard {shard}: truncated inside member {info.name}")
                    entries.setdefault(key, {})[ext] = (info.offset_data, info.size)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ShardError(f"shard {shard}: unreadable tar ({exc})") from None
        return entries

    def index(self, shard: str) -> dict[str, dict[str, tuple[int, int]]]:
        """key -> {extension: (offset, size)} for one shard."""
        with self._shard_lock(shard):
            return self._index_locked(shard)

    def _index_locked(self, shard: str) -> dict[str, dict[str, tuple[int, int]]]:
        found = self._index.get(shard)
        if found is None:
            found = self._index[shard] = self._build_index(shard, self._file(shard))
        return found

    def read(self, shard: str, key: str, exts: Sequence[str | tuple[str, ...]]) -> dict[str, bytes]:
        """The members ``exts`` of sample ``key``; an extension may be a tuple of alternatives."""
        with self._shard_lock(shard):
            members = self._index_locked(shard).get(key)
            if members is None:
                raise ShardError(f"shard {shard}: sample {key} is not in it")
            fh = self._file(shard)
            out = {}
            for ext in exts:
                name = ext if isinstance(ext, str) else next((e for e in ext if e in members), ext[0])
                if name not in members:
                    raise ShardError(f"shard {shard}: sample {key} has no {name} member")
                offset, size = members[name]
                data = fh.read_at(size, offset)
                if len(data) != size:
                    raise ShardError(f"shard {shard}: member {key}.{name} is truncated")
                out[name] = data
        return out

    def close(self) -> None:
        with self._lock:
            self._files.clear()


def decode_rgb(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("illustration does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_gray(data: bytes) -> np.ndarray:
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError("line drawing does not decode")
    return gray


# ---------------------------------------------------------------- the stream


class BatchStream:
    """Iterable of batches (or of key lists); see ``batches``. Re-iterating starts at ``state``."""

    def __init__(self, out: Layout | str, batch_size: int, *, seed: int = 0, keys_only: bool = False, resampled: bool = True,
                 weighted: bool = True, epoch: int = 0, epoch_draws: int | None = None, drop_last: bool | None = None,
                 extractor: str | None = None, extractor_probs: Mapping[str, float] | None = None, decode: bool = True,
                 rank: int = 0, world_size: int = 1, state: Mapping[str, Any] | None = None,
                 skip_bad_shards: bool = False, threads: int = 4, weights: str | None = None) -> None:  # fmt: skip
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LoaderError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise LoaderError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0 <= rank < world_size:
            raise LoaderError(f"rank {rank} is not in [0, world_size={world_size})")
        if epoch_draws is not None and (resampled or epoch_draws < 1):
            raise LoaderError("epoch_draws is for one-pass mode (resampled=False) and must be >= 1")
        self.out, self.batch_size, self.seed = out, batch_size, seed
        self.keys_only, self.decode, self.threads = keys_only, decode, max(1, threads)
        self.rank, self.world_size, self.skip_bad_shards = rank, world_size, skip_bad_shards
        self.resampled, self.epoch = resampled, epoch
        self.pop, self.layout = load_population(
            out, weighted=weighted, skip_bad_shards=skip_bad_shards, weights=weights
        )
        self.out = self.layout.out
        drop_last = resampled if drop_last is None else drop_last
        self.plan = _Plan(self.pop, batch_size, seed, resampled, epoch, epoch_draws, drop_last)
        self._settings = {
            "version": STATE_VERSION, "build": self.pop.fingerprint, "seed": seed, "batch_size": batch_size,
            "resampled": resampled, "epoch": epoch, "epoch_draws": epoch_draws, "drop_last": drop_last,
            "rank": rank, "world_size": world_size,
        }  # fmt: skip
        self.extractor, self.extractor_probs = extractor, dict(extractor_probs or {})
        self._check_extractors()
        self.position = 0  # batches of this rank consumed so far
        if state is not None:
            self.load_state_dict(state)
        self._reader: ShardReader | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

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
        if self.plan.total is None:
            raise TypeError("a resampled stream is infinite")
        return len(range(self.rank, self.plan.total, self.world_size))

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

    def index_batches(self, start: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(local position, bucket index, manifest rows) per batch, without reading any shard."""
        for position in self._local_positions(self.position if start is None else start):
            found = self.plan.batch(self.rank + position * self.world_size)
            if found is None:
                return
            yield position, found[0], found[1]

    def __iter__(self) -> Iterator[Batch] | Iterator[list[str]]:
        for position, bucket, rows in self.index_batches():
            self.position = position + 1
            if self.keys_only:
                yield self.pop.keys.take(pa.array(rows)).to_pylist()
            else:
                yield self._batch(position, bucket, rows)

    # -- decoding

    def _check_extractors(self) -> None:
        names = sorted({n for ex in self.pop.extractor_names for n in ex})
        wanted = [self.extractor] if self.extractor else list(self.extractor_probs)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise LoaderError(
                f"extractor(s) {', '.join(unknown)} not in this build (it has: {', '.join(names)})"
            )
        if any((not isinstance(p, int | float)) or p < 0 for p in self.extractor_probs.values()):
            raise LoaderError(f"extractor_probs must be >= 0: {self.extractor_probs}")

    def _choose_extractors(self, j: int, rows: np.ndarray) -> list[str]:
        u = _rng(self.seed, _EXTRACTOR, j).random(len(rows))
        chosen = []
        for r, x in zip(rows, u, strict=True):
            options = self.pop.extractors(r)
            if self.extractor:
                if self.extractor not in options:
                    raise LoaderError(f"sample {self.pop.key(r)} has no {self.extractor} line drawing")
                chosen.append(self.extractor)
                continue
            p = np.asarray(
                [self.extractor_probs.get(n, 0.0 if self.extractor_probs else 1.0) for n in options]
            )
            if p.sum() <= 0:
                raise LoaderError(
                    f"sample {self.pop.key(r)}: extractor_probs give its extractors {options} no weight"
                )
            chosen.append(
                options[min(int(np.searchsorted(np.cumsum(p) / p.sum(), x, side="right")), len(options) - 1)]
            )
        return chosen

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
        j = self.rank + position * self.world_size
        extractors = self._choose_extractors(j, rows)
        keys = self.pop.keys.take(pa.array(rows)).to_pylist()
        reader = self.reader()

        def load(i: int):
            r = rows[i]
            key, shard = keys[i], self.pop.shard(r)
            try:
                files = reader.read(shard, key, (IMAGE_EXTS, "json", drawing_member(extractors[i])))
                image_ext = next(e for e in IMAGE_EXTS if e in files)
                meta = samplejson.decode(files["json"])
                if not self.decode:
                    return key, meta, files[image_ext], files[drawing_member(extractors[i])]
                return (
                    key,
                    meta,
                    decode_rgb(files[image_ext]),
                    decode_gray(files[drawing_member(extractors[i])]),
                )
            except (ShardError, ValueError) as exc:
                if not self.skip_bad_shards:
                    raise ShardError(f"shard {shard}, sample {key}: {exc}") from None
                warnings.warn(f"skipping sample {key} of shard {shard}: {exc}", stacklevel=2)
                return None

        if self.threads > 1 and len(rows) > 1:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads)
            loaded = list(self._pool.map(load, range(len(rows))))
        else:
            loaded = [load(i) for i in range(len(rows))]
        keep = [i for i, x in enumerate(loaded) if x is not None]
        loaded = [loaded[i] for i in keep]
        keys = [x[0] for x in loaded]  # those that loaded
        meta = [x[1] for x in loaded]
        state = {**self._settings, "position": position + 1}
        common = {"keys": keys, "bucket": self.pop.buckets[bucket], "extractors": [extractors[i] for i in keep],
                  "meta": meta, "state": state}  # fmt: skip
        if not self.decode:
            return Batch(images=None, lines=None, image_bytes=[x[2] for x in loaded],
                         line_bytes=[x[3] for x in loaded], **common)  # fmt: skip
        w, h = self.pop.buckets[bucket]
        images = np.stack([x[2] for x in loaded]) if loaded else np.zeros((0, h, w, 3), np.uint8)
        lines = np.stack([x[3] for x in loaded]) if loaded else np.zeros((0, h, w), np.uint8)
        return Batch(images=images, lines=lines, **common)

    def rows_of(self, keys: Sequence[str]) -> list[int | None]:
        """The population row of each key (None: not in the build). One hash of the population's
        keys per call, so look many keys up at once."""
        return pc.index_in(pa.array(list(keys), pa.string()), value_set=self.pop.keys).to_pylist()

    def sample_at(self, row: int) -> dict[str, Any]:
        """The whole sample of population row ``row`` (see ``samples``)."""
        key, names = self.pop.key(row), self.pop.extractors(row)
        files = self.reader().read(
            self.pop.shard(row), key, (IMAGE_EXTS, "json", *[drawing_member(n) for n in names])
        )
        image = next(files[e] for e in IMAGE_EXTS if e in files)
        return {
            "key": key,
            "image": decode_rgb(image),
            "lines": {n: decode_gray(files[drawing_member(n)]) for n in names},
            "meta": samplejson.decode(files["json"]),
        }

    def samples(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """Whole samples by key: {"key", "image" (RGB), "lines" {extractor: gray}, "meta"} (for audits)."""
        rows = self.rows_of(keys)
        for key, r in zip(keys, rows, strict=True):
            if r is None:
                raise LoaderError(f"no sample {key} in {self.out}")
        return [self.sample_at(r) for r in rows]

    def torch_dataset(self):
        """This stream as a ``torch.utils.data.IterableDataset``: ``DataLoader(ds, batch_size=None, num_workers=K)``."""
        return _torch_dataset_class()(self)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without threads or open files
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_pool"] = None
        return state


def _torch_dataset_class():
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
        return _torch_dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def batches(out: str, batch_size: int, seed: int = 0, keys_only: bool = False, **options: Any) -> BatchStream:
    """Bucket-pure, weight-true batches from the build in ``out`` (a path or a URL).

    Options (keyword): ``resampled`` (True: infinite; False: one pass), ``weighted``, ``epoch``,
    ``epoch_draws``, ``drop_last``, ``extractor`` (always this one) or ``extractor_probs``
    ({name: probability}), ``decode`` (False: encoded bytes), ``rank``/``world_size``,
    ``state`` (from ``Batch.state`` or ``BatchStream.state_dict()``), ``skip_bad_shards``,
    ``threads`` (decode threads), ``weights`` (a weight version name; default: the active one).
    See docs/loader.md.
    """
    return BatchStream(out, batch_size, seed=seed, keys_only=keys_only, **options)


__all__ = [
    "Batch", "BatchStream", "LoaderError", "LoaderStateError", "Population", "ShardError", "ShardReader",
    "batches", "load_population", "open_filesystem", "systematic_counts",
]  # fmt: skip
