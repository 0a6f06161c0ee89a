"""The population stage: OUT's manifest joined with a weight version, as arrays grouped by bucket.

It is what the sampler draws from, checked first against build.json's records (docs/output.md,
"Integrity"): shards.json's sha256, the manifest's size, the weight version, weights that can be
drawn by, and shards that are where shards.json says (or left out, with ``skip_bad_shards``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from groundwork.contract import MANIFEST, SHARDS_JSON

from ..integrity import check_bytes, check_size, read_shards, recorded_files
from ..layout import DamagedFileError, Layout, StorageError, first_line, storage_fault
from ..layout import open_filesystem as _open_filesystem
from ..weights import WeightsVersionError, read_version
from .errors import REPAIR_HINT, LoaderError, ShardError

_MANIFEST_COLUMNS = ["key", "source", "shard", "bucket_w", "bucket_h", "extractors"]


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

    def keys_at(self, rows: np.ndarray) -> list[str]:
        """The keys of ``rows``, in order."""
        return self.keys.take(pa.array(rows)).to_pylist()


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


__all__ = ["Population", "load_population", "open_filesystem", "open_layout", "shard_problems"]
