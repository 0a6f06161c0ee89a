"""The plan phase in bounded memory: dedup, bucket fit and the shard plan from a few columns, then the
plan rows streamed from the scan parts into ``plan.parquet`` (sorted by shard) without ever holding
the whole scan table. One body for a fresh build and an increment: the plan grows a base
(``PlanBase``), empty for a fresh build; onto a finished build the new samples are deduplicated
together with the base's hashes (read as arrays, never its table) and shards numbered after its own.

Pass A reads only the small columns of kept rows (hashes, sizes, scores, keys, sources: ~150 B a
row) and computes every decision as arrays; the weight policy is only checked for feasibility
there (contract 2: weights live in weight versions, solved at finalize). Pass B reads the scan parts one at a time, takes the
planned rows, appends the plan columns and spills them into bins of ``bin_rows`` by final
position; each bin is then sorted and appended to ``plan.parquet``. The bins are Arrow IPC streams,
not parquet: every part adds a piece to every bin, and a parquet writer keeps each piece's row-group
metadata until it closes (parts x bins ~ N^2 pieces: ~95,000 at 10M, GBs), a stream keeps none. The same pass writes the early
rejects (scan verdicts, dedup drops and ``too_small_for_bucket``, sorted by ``seq``) that ``finalize`` merges with the late
ones, so nothing reads the scan again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import DedupConfig, as_unsigned
from curation.weighting import WeightConfig, WeightError
from sharding.buckets import BucketRule
from sharding.layout import BUILD_JSON, MANIFEST, SHARDS_JSON, Layout
from sharding.plan import assign_shards, fit_buckets, plan_columns, shard_index
from sharding.schema import (
    PLAN_COLUMNS,
    PLAN_EXTRA,
    PLAN_SCHEMA,
    REJECT_COLUMNS,
    REJECT_ID_COLUMNS,
    REJECT_SCHEMA,
    SCAN_SCHEMA,
)

from ..columnar import ROW_GROUP, atomic_parquet, codes, give_back_memory, parquet_batches, ranks
from ..config import ConfigError
from ..dedup import dedup_arrays, duplicate_notes, quality_note, reject_rows
from ..tools.reweight import manifest_inputs, policies_of, solve, solve_columns
from .base import Base, Increment
from .request import BuildRequest, log

BIN_ROWS = 262_144  # plan rows sorted in memory at once (~1 KB each with tags)
# A fresh plan of fewer kept rows frees a few MB, and giving them back costs more than they are
# worth: the gc pass alone took 57 ms on a driver holding Ray's objects (docs/scale.md).
GIVE_BACK_ROWS = 16_384
_DEST = "_dest"
# spill bins: zstd keeps the scratch near parquet's size (tags compress well); lz4 if zstd is absent
_SPILL_IPC = pa.ipc.IpcWriteOptions(compression="zstd" if pa.Codec.is_available("zstd") else "lz4")
_IDS = list(REJECT_ID_COLUMNS)


@dataclass(frozen=True)
class PlanSettings:
    dedup: DedupConfig
    weights: WeightConfig
    buckets: BucketRule
    samples_per_shard: int
    seed: int


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _words_slow(values: list[str | None]) -> np.ndarray:
    """The same words for any strings: a hex digest decoded, anything else (or null) hashed."""
    out = bytearray()
    for v in values:
        if v is not None and len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v):
            out += bytes.fromhex(v)
        else:
            out += hashlib.sha256(b"\0" + (v or "").encode("utf-8", "surrogatepass")).digest()
    return np.frombuffer(bytes(out), np.uint64).reshape(-1, 4)


def sha_words(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """SHA-256 hex strings as 4 uint64 words a row (n x 4, exact: all 256 bits), 32 B a row instead
    of a 64-character string and its dictionary entry. Equal strings give equal words."""
    arr = pa.chunked_array(column, pa.string()).combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros((0, 4), np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4)
    if not arr.null_count and np.all(np.diff(offsets) == 64):
        text = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(n, 64)
        nibbles = _HEX[text]
        if not (nibbles == 255).any():
            return np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(np.uint64)
    return _words_slow(arr.to_pylist())  # not all hex digests (hand-made parts): the slow, same map


def _kept_columns(
    layout: Layout, parts: list[str], columns: list[str]
) -> tuple[pa.Table, np.ndarray, list[int]]:
    """Pass A: ``columns`` of the kept rows of every part, their sha256 as words (``sha_words``)
    and the kept count per part.

    The sha256 text becomes 32 bytes a row part by part and is never held as strings: at 10M rows
    the strings and their dictionary were ~1.4 GB of the plan's peak."""
    tables, words, per_part = [], [], []
    for path in parts:
        t = layout.read_parquet(path, columns=["status", *columns, "sha256"])
        t = t.filter(pc.equal(t["status"], "kept")).drop_columns(["status"])
        words.append(sha_words(t["sha256"]))
        tables.append(t.drop_columns(["sha256"]).combine_chunks())
        per_part.append(t.num_rows)
    if not tables:
        return SCAN_SCHEMA.empty_table().select(columns), np.zeros((0, 4), np.uint64), per_part
    return pa.concat_tables(tables).combine_chunks(), np.concatenate(words), per_part


@dataclass(frozen=True)
class PlanBase:
    """What the plan takes from the build it grows from, and where it writes. The empty base (a
    fresh build, the default): no samples to dedup against, shards numbered from 0, the plan files
    in ``_state/``. A finished build's snapshot (an increment): its manifest's hashes, the first free
    shard number per bucket, the columns its weight versions are solved from, the increment's files."""

    first_chunk: int = 0  # the scan parts planned: first_chunk .. chunks - 1
    manifest: str | None = None  # the base's manifest (None: the empty base)
    first_index: dict[tuple[int, int], int] = field(default_factory=dict)  # per bucket: first free number
    weight_columns: tuple[str, ...] = ()  # what the base's weight versions read, besides [weights]'
    plan: str | None = None  # None: layout.plan
    early: str | None = None  # None: layout.early_rejects


@dataclass
class _BaseHashes:
    """The base's samples as the dedup sees them (~56 B a sample; its keys are read only for the few
    that keep a new duplicate out)."""

    phash: np.ndarray
    words: np.ndarray
    pixels: np.ndarray
    seq: np.ndarray

    @classmethod
    def read(cls, layout: Layout, manifest: str | None) -> _BaseHashes:
        phash, words, pixels, seq = [], [], [], []
        if manifest is not None:
            for t in parquet_batches(layout, manifest, columns=["phash", "sha256", "width", "height", "seq"]):
                phash.append(_np(t, "phash", np.int64))
                words.append(sha_words(t["sha256"]))
                pixels.append((_np(t, "width", np.int64) * _np(t, "height", np.int64)).astype(np.float64))
                seq.append(_np(t, "seq", np.int64))
        return cls(
            _cat(phash, np.int64), np.concatenate(words) if words else np.zeros((0, 4), np.uint64),
            _cat(pixels, np.float64), _cat(seq, np.int64),
        )  # fmt: skip


def _cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _join(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """base rows then new rows (no copy onto the empty base: a fresh 10M plan's peak)."""
    return new if len(base) == 0 else np.concatenate([base, new])


def _column_at(layout: Layout, path: str, column: str, rows: np.ndarray) -> list[Any]:
    """``column`` of the file's rows ``rows`` (any order), read one row group at a time."""
    wanted, inverse = np.unique(rows, return_inverse=True)
    found, start = [], 0
    for t in parquet_batches(layout, path, columns=[column]):
        lo, hi = np.searchsorted(wanted, [start, start + t.num_rows])
        if hi > lo:
            found.append(t[column].take(pa.array(wanted[lo:hi] - start, pa.int64())))
        start += t.num_rows
    values = pa.chunked_array(found, pa.string()) if found else pa.chunked_array([], pa.string())
    return values.take(pa.array(inverse.reshape(-1), pa.int64())).to_pylist()


def write_plan(
    layout: Layout, chunks: int, s: PlanSettings, log: Callable[[str], None] = lambda _: None,
    bin_rows: int = BIN_ROWS, check_weights: Callable[[pa.Table], None] = lambda _: None,
    onto: PlanBase = PlanBase(),
) -> dict[str, int]:  # fmt: skip
    """Plan the kept rows of scan parts ``onto.first_chunk`` .. ``chunks - 1`` onto the base ``onto``
    into its plan file, their early rejects (scan verdicts, duplicates, too small; sorted by seq per
    part) into its early file. A new sample that duplicates one of the base's is dropped (an old
    sample always keeps its place); shards are numbered after the base's. ``check_weights`` sees the
    planned samples' weight columns first and may raise (nothing is written then).

    Spill files are the driver's own scratch (a local temporary folder), read back by it alone.
    """
    plan_path, early_path = onto.plan or layout.plan, onto.early or layout.early_rejects
    parts = [layout.scan_part(c) for c in range(onto.first_chunk, chunks)]
    # the dedup's and the bucket fit's columns, then every column a weight version is solved from
    # (tools.reweight.manifest_inputs: the one list) that exists before the plan adds its own
    planned_later = {f.name for f in PLAN_EXTRA}
    inputs = dict.fromkeys([*manifest_inputs(s.weights), *onto.weight_columns])
    weights = [c for c in inputs if c not in planned_later]
    small = list(dict.fromkeys(["seq", "key", "phash", "width", "height", *weights]))
    kept, words, per_part = _kept_columns(layout, parts, small)
    n = kept.num_rows
    phash = _np(kept, "phash", np.int64)
    score = _np(kept, "quality_score", np.float64)
    if s.dedup.enabled and n:
        # one search over the base's samples (b, first) and the new ones; a base sample's score
        # counts as infinite, so it always keeps its place and a new copy of it is the one dropped
        base = _BaseHashes.read(layout, onto.manifest)
        base_phash, b = base.phash, len(base.phash)
        sha_codes = np.unique(_join(base.words, words), axis=0, return_inverse=True)[1].reshape(-1)
        words = None  # freed before the search, as the base's columns once joined
        pixels = (_np(kept, "width", np.int64) * _np(kept, "height", np.int64)).astype(np.float64)
        pixels, seq = _join(base.pixels, pixels), _join(base.seq, _np(kept, "seq", np.int64))
        del base
        result, stats = dedup_arrays(
            _join(base_phash, phash), sha_codes.astype(np.int64), _join(np.full(b, np.inf), score), pixels, seq,
            s.dedup,
        )  # fmt: skip
        keeper, exact, dropped = result.keeper[b:], result.exact[b:], result.dropped[b:]
        stats["dropped"] = int(dropped.sum())  # of the new samples (the base's own are not touched)
        del result, pixels, seq, sha_codes
    else:
        base_phash, b = np.zeros(0, np.int64), 0
        keeper, exact, dropped = np.arange(n), np.zeros(n, bool), np.zeros(n, bool)
        stats = {"route": None, "pairs": 0, "dropped": 0}
    del words
    log(f"dedup: {stats['dropped']} duplicates dropped ({stats['pairs']} pairs, route {stats['route']})")

    # dedup first (over every kept sample), then the sizes no bucket fits (pipelines.build order)
    fit = fit_buckets(_np(kept, "width", np.int64), _np(kept, "height", np.int64), s.buckets)
    small_size = fit.too_small
    too_small = small_size & ~dropped
    survivors = np.flatnonzero(~dropped & ~small_size)
    planned = kept.drop_columns(["seq", "phash"]).take(pa.array(survivors, pa.int64()))
    duplicates = np.flatnonzero(dropped)  # their reject rows' notes now, so pass B holds no keys
    notes = _duplicate_notes(layout, onto, duplicates, keeper, exact, kept["key"], phash, score, base_phash)
    del kept, keeper, exact, phash, score, base_phash  # before the weights are solved and pass B streams
    assignment = assign_shards(
        fit.take(survivors), ranks(planned["key"]), samples_per_shard=s.samples_per_shard, seed=s.seed,
        first_index=onto.first_index,
    )  # fmt: skip
    small_rows = np.flatnonzero(too_small)  # pass B writes their reject rows from this small fit
    small_fit = fit.take(small_rows)
    del fit
    check_weights(planned.append_column("bucket_upscale", pa.array(assignment.upscale, pa.float64())))
    extra = plan_columns(assignment)  # after the check, so the two never hold memory together
    m = len(survivors)
    dest = np.empty(m, np.int64)
    dest[assignment.order] = np.arange(m)
    plan_index = np.full(n, -1, np.int64)  # kept row -> planned row (-1: dropped as a duplicate)
    plan_index[survivors] = np.arange(m)
    del planned, assignment, survivors, small_size
    # an append also held its base's columns (the dedup's hashes, the weight check), whatever its size
    give_back = n >= GIVE_BACK_ROWS or onto.manifest is not None
    if give_back:
        give_back_memory()  # pass A's freed buffers, before pass B's bins

    bins = max(1, -(-m // bin_rows))
    spill_schema = PLAN_SCHEMA.append(pa.field(_DEST, pa.int64()))
    in_memory: list[pa.Table] = []
    spills: list[pa.ipc.RecordBatchStreamWriter] = []
    spill_dir = tempfile.mkdtemp(prefix="linepairs-plan-") if bins > 1 else ""
    try:
        if bins > 1:
            spills = [pa.ipc.new_stream(_bin_path(spill_dir, b), spill_schema, options=_SPILL_IPC)
                      for b in range(bins)]  # fmt: skip
        reject_count = 0
        with atomic_parquet(layout, early_path, REJECT_SCHEMA) as rejects:
            offset = 0
            for path, count in zip(parts, per_part, strict=True):
                t = layout.read_parquet(
                    path, columns=list(dict.fromkeys(["status", *PLAN_COLUMNS, *REJECT_COLUMNS]))
                )
                is_kept = pc.equal(t["status"], "kept")
                early = [t.filter(pc.invert(is_kept)).select(REJECT_COLUMNS).cast(REJECT_SCHEMA)]
                rows = t.filter(is_kept)
                if rows.num_rows != count:
                    raise RuntimeError(f"{path} changed during the plan phase")
                k = np.arange(offset, offset + count)
                offset += count
                duplicate, small_one = dropped[k], too_small[k]
                if duplicate.any():
                    ids = rows.select(_IDS).filter(pa.array(duplicate))  # only the id columns copied
                    at = np.searchsorted(duplicates, k[duplicate])
                    early.append(reject_rows(ids, notes.take(pa.array(at, pa.int64()))))
                if small_one.any():
                    these = small_fit.take(np.searchsorted(small_rows, k[small_one]))
                    ids = rows.select(_IDS).filter(pa.array(small_one))
                    early.append(pa.Table.from_pylist(these.reject_rows(ids), schema=REJECT_SCHEMA))
                gone = duplicate | small_one
                part_rejects = pa.concat_tables(early).sort_by("seq")
                reject_count += part_rejects.num_rows
                if part_rejects.num_rows:
                    rejects.write_table(part_rejects, row_group_size=ROW_GROUP)
                p = plan_index[k[~gone]]
                if len(p) == 0:
                    continue
                rows = rows.filter(pa.array(~gone)).select(PLAN_COLUMNS)
                take = pa.array(p, pa.int64())
                for name, column in extra.items():
                    rows = rows.append_column(name, column.take(take))
                rows = rows.append_column(_DEST, pa.array(dest[p])).cast(spill_schema)
                if not spills:
                    in_memory.append(rows)
                    continue
                which = dest[p] // bin_rows
                order = np.argsort(which, kind="stable")  # one take, then a slice per bin
                rows, which = rows.take(pa.array(order, pa.int64())), which[order]
                edges = np.flatnonzero(np.diff(which)) + 1
                for lo, hi in zip([0, *edges.tolist()], [*edges.tolist(), len(which)], strict=True):
                    spills[int(which[lo])].write_table(rows.slice(lo, hi - lo))
        for w in spills:
            w.close()
        with atomic_parquet(layout, plan_path, PLAN_SCHEMA) as plan:
            for b in range(bins):
                if spills:
                    with pa.ipc.open_stream(_bin_path(spill_dir, b)) as stream:
                        t = stream.read_all().combine_chunks()
                else:
                    t = pa.concat_tables(in_memory) if in_memory else spill_schema.empty_table()
                    in_memory = []
                t = t.take(pc.sort_indices(t[_DEST])).drop_columns([_DEST])
                plan.write_table(t, row_group_size=ROW_GROUP)
                del t
                if give_back:
                    give_back_memory()  # one bin's buffers at a time
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
    return {"planned": m, "early_rejects": reject_count, "too_small": int(too_small.sum()), **stats}


def _duplicate_notes(
    layout: Layout, onto: PlanBase, duplicates: np.ndarray, keeper: np.ndarray, exact: np.ndarray,
    keys: pa.ChunkedArray, phash: np.ndarray, score: np.ndarray, base_phash: np.ndarray,
) -> pa.Table:  # fmt: skip
    """The notes of the new samples ``duplicates`` (new rows) dropped for ``keeper`` (rows of base
    then new: below ``len(base_phash)`` a base sample). A fresh build's note weighs the two qualities; an
    increment's says where the keeper is kept (an earlier build or this increment)."""
    k, b = keeper[duplicates], len(base_phash)
    old = k < b
    theirs = phash[np.where(old, 0, k - b)] if len(k) else np.zeros(0, np.int64)
    if old.any():
        theirs[old] = base_phash[k[old]]
    bits = np.bitwise_count(as_unsigned(phash[duplicates]) ^ as_unsigned(theirs)).astype(np.int64)
    keeper_keys = pa.chunked_array(keys).take(pa.array(np.where(old, 0, k - b), pa.int64())).to_pylist()
    if old.any():
        for i, key in zip(np.flatnonzero(old).tolist(), _column_at(layout, onto.manifest, "key", k[old])):
            keeper_keys[i] = key
    if onto.manifest is None:
        why = [quality_note(score[j], score[d]) for j, d in zip(k.tolist(), duplicates.tolist())]
    else:
        why = ["kept, an earlier build" if o else "kept, this increment" for o in old.tolist()]
    return duplicate_notes(exact[duplicates], bits, keeper_keys, why)


def _np(table: pa.Table, column: str, dtype) -> np.ndarray:
    return table[column].to_numpy().astype(dtype) if table.num_rows else np.zeros(0, dtype)


def _bin_path(spill_dir: str, b: int) -> str:
    return os.path.join(spill_dir, f"bin-{b:05d}.arrows")


class PlanReader:
    """A finished plan.parquet read shard by shard: the driver holds (offset, length) per shard and at
    most the row groups of the shard in flight, never the whole plan."""

    def __init__(self, layout: Layout, path: str):
        self.file = layout.parquet_file(path)  # pages CRC-checked as they are read
        meta = self.file.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_rows = int(self.starts[-1])
        self.spans: dict[str, tuple[int, int]] = {}
        prev, start, at = None, 0, 0
        for i in range(meta.num_row_groups):
            column = self.file.read_row_group(i, columns=["shard"])["shard"]
            code, names = codes(column)
            change = np.flatnonzero(np.r_[True, code[1:] != code[:-1]]) if len(code) else []
            for c in change:
                name = names[code[c]]
                if name != prev:
                    if prev is not None:
                        self.spans[prev] = (start, at + int(c) - start)
                    prev, start = name, at + int(c)
            at += len(code)
        if prev is not None:
            self.spans[prev] = (start, at - start)
        self._cache: dict[int, pa.Table] = {}

    def _group(self, i: int) -> pa.Table:
        if i not in self._cache:
            if len(self._cache) >= 2:  # shards are asked for in plan order: keep the last two groups
                self._cache.pop(min(self._cache))
            self._cache[i] = self.file.read_row_group(i)
        return self._cache[i]

    def table(self, shard: str) -> pa.Table:
        offset, length = self.spans[shard]
        first = int(np.searchsorted(self.starts, offset, side="right")) - 1
        last = int(np.searchsorted(self.starts, offset + length - 1, side="right")) - 1
        groups = [self._group(i) for i in range(first, last + 1)]
        return pa.concat_tables(groups).slice(offset - int(self.starts[first]), length)

    def rows(self, shard: str) -> list[dict]:
        return self.table(shard).to_pylist()


def plan(req: BuildRequest, layout: Layout, base: Base, work: dict[str, Any]) -> PlanReader:
    """The phase's one entry: dedup, bucket fit, a feasibility check of the weights and the shard plan
    of the samples ``work`` scanned, streamed from the scan parts (memory per part) onto the base
    (``plan_base``): onto a finished build it dedups against the base's hashes, numbers its shards
    after the base's and re-solves every weight version first."""
    onto = plan_base(layout, base, work["first_chunk"])
    if not layout.exists(onto.plan) or not layout.exists(onto.early):  # (the early rejects written first)
        cfg = req.config
        settings = PlanSettings(cfg.dedup, cfg.weights, cfg.buckets, cfg.shards.samples_per_shard, cfg.seed)
        if base.inc is None:
            check = lambda planned: check_weights(cfg.weights, planned)  # noqa: E731
        else:
            check = lambda planned: check_versions(layout, base.inc, cfg.weights, planned)  # noqa: E731
        write_plan(
            layout, work["chunks"], settings, log=lambda msg: log(req, msg), check_weights=check, onto=onto
        )
    return PlanReader(layout, onto.plan)


def plan_base(layout: Layout, base: Base, first_chunk: int) -> PlanBase:
    """What the plan takes from ``base``: nothing from the empty base; from an increment's snapshot its
    manifest, the first free shard number per bucket and its weight versions' columns."""
    if base.inc is None:
        return PlanBase(first_chunk, plan=layout.plan, early=layout.early_rejects)
    inc = base.inc
    first_index: dict[tuple[int, int], int] = {}
    for entry in layout.read_json(inc.base(SHARDS_JSON))["shards"]:
        bucket, number = shard_index(entry["path"])
        first_index[bucket] = max(first_index.get(bucket, 0), number + 1)
    versions = solve_columns(policies_of(layout, layout.read_json(inc.base(BUILD_JSON))))
    return PlanBase(
        first_chunk, inc.base(MANIFEST), first_index, tuple(versions), inc.plan, inc.early_rejects
    )


def check_weights(cfg: WeightConfig, kept: pa.Table) -> None:
    """Refuse a policy these samples cannot meet before anything is planned (the weights proper are
    solved at finalize, over the samples actually written)."""
    try:
        solve(kept, cfg)
    except WeightError as exc:
        raise ConfigError(
            f"{exc}. Fix [weights] and run the same command again: nothing is planned yet, so the scan is reused."
        ) from None


def check_versions(layout: Layout, inc: Increment, given: WeightConfig, planned: pa.Table) -> list[str]:
    """Every weight version of the build before this increment re-solved over its manifest plus the
    ``planned`` rows, from the columns each is solved from (``reweight.manifest_inputs``, as finalize
    solves it), and the command's ``[weights]``. ConfigError when the active version or the given
    policy cannot be met (no shard is written yet); returns why each other version cannot (finalize
    removes those and the summary names them)."""
    from ..tools.reweight import policy_of

    base = layout.read_json(inc.base(BUILD_JSON))
    active = base.get("weights_active")
    named = policies_of(layout, base)
    old = layout.read_parquet(inc.base(MANIFEST), columns=solve_columns(named, given))
    lost = []
    for name, meta in [*sorted(named.items()), (None, None)]:
        try:
            cfg = given if name is None else policy_of(meta)
            cols = [c for c in manifest_inputs(cfg) if c in planned.column_names]
            union = pa.concat_tables([old.select(cols), planned.select(cols).cast(old.select(cols).schema)])
            solve(union, cfg)
        except (WeightError, ValueError, KeyError) as exc:
            if name is None or name == active:
                what = (
                    "the [weights] given with this command"
                    if name is None
                    else f"active weight version {name!r}"
                )
                raise ConfigError(
                    f"{what}: {exc}; nothing was written. Fix [weights] (or first activate a version the "
                    f"grown build can meet: `linepairs reweight {layout.out} --config FILE --activate`) and "
                    "run the same command again"
                ) from None
            lost.append(f"{name}: {exc}")
    return lost
