"""The build's final tables, streamed: manifest.parquet from plan.parquet one row group at a time,
rejects.parquet by merging the early rejects (already sorted by ``seq``) with the late ones.

The driver keeps only a bucket code per sample for the counts, never the rows or a Python object
per tag. Weights are not here (contract 2): the build solves its first version from the manifest.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.records import TAG_CATEGORIES
from groundwork.contract import TXT_SINCE_CONTRACT
from sharding.layout import Layout
from sharding.samplejson import dataset_card
from sharding.schema import MANIFEST_SCHEMA, REJECT_SCHEMA

from .columnar import ROW_GROUP, atomic_parquet, bucket_labels, codes, concat_lists, parquet_batches

_LABELS = ("bucket",)


@dataclass
class Tally:
    """Per written sample: a code per label dimension (names shared across batches)."""

    samples: int = 0
    names: dict[str, dict[str, int]] = field(default_factory=lambda: {d: {} for d in _LABELS})
    codes: dict[str, list[np.ndarray]] = field(default_factory=lambda: {d: [] for d in _LABELS})

    def add(self, rows: int, columns: Mapping[str, pa.Array]) -> None:
        self.samples += rows
        for dim, column in columns.items():
            local, values = codes(column)
            known = self.names[dim]
            remap = np.asarray([known.setdefault(v, len(known)) for v in values], np.int32)
            self.codes[dim].append(remap[local] if len(values) else local)

    def labels(self, dim: str) -> np.ndarray:
        """Object array of the label of every sample (one shared string per distinct label)."""
        names = np.empty(len(self.names[dim]), dtype=object)
        names[:] = list(self.names[dim])
        return names[np.concatenate(self.codes[dim])] if self.codes[dim] else np.zeros(0, dtype=object)

    def counts(self, dim: str) -> dict[str, int]:
        if not self.codes[dim]:
            return {}
        per = np.bincount(np.concatenate(self.codes[dim]), minlength=len(self.names[dim]))
        return {name: int(per[i]) for name, i in self.names[dim].items() if per[i]}


def extractor_lists(
    keys: pa.Array, extractors: list[str], dropped: Mapping[str, Mapping[str, str]]
) -> pa.Array:
    """Per row the extractors whose drawing was stored: all of them except the dropped ones."""
    n = len(keys)
    hit = pc.is_in(keys, value_set=pa.array(list(dropped), pa.string())).to_numpy(zero_copy_only=False)
    if dropped and hit.any():
        return pa.array(
            [[e for e in extractors if e not in dropped.get(k, {})] for k in keys.to_pylist()],
            pa.list_(pa.string()),
        )
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * len(extractors))
    return pa.ListArray.from_arrays(offsets, pa.array(extractors * n, pa.string()))


def manifest_rows(
    plan_rows: pa.Table, late: pa.Array, extractors: list[str], dropped: Mapping[str, Mapping[str, str]]
) -> pa.Table:
    """Manifest rows of these plan rows: the late rejects (keys ``late``) left out, plus ``tags`` (all
    categories) and ``extractors`` (the drawings stored)."""
    if len(late):
        plan_rows = plan_rows.filter(pc.invert(pc.is_in(plan_rows["key"], value_set=late)))
    plan_rows = plan_rows.append_column(
        "tags", concat_lists([plan_rows[f"tags_{c}"] for c in TAG_CATEGORIES])
    )
    keys = plan_rows["key"].combine_chunks()
    plan_rows = plan_rows.append_column("extractors", extractor_lists(keys, extractors, dropped))
    return plan_rows.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def write_manifest(
    layout: Layout, late_keys: set[str], extractors: list[str],
    dropped: Mapping[str, Mapping[str, str]], path: str | None = None,
) -> Tally:  # fmt: skip
    """The plan rows minus the late rejects, plus ``tags`` (all categories) and ``extractors``, into
    ``path`` (default manifest.parquet; the repair writes the same bytes elsewhere first)."""
    tally = Tally()
    late = pa.array(sorted(late_keys), pa.string())
    with atomic_parquet(layout, path or layout.manifest, MANIFEST_SCHEMA) as out:
        for batch in parquet_batches(layout, layout.plan):
            batch = manifest_rows(batch, late, extractors, dropped)
            if batch.num_rows == 0:
                continue
            out.write_table(batch, row_group_size=ROW_GROUP)
            bucket = bucket_labels(batch)
            tally.add(batch.num_rows, {"bucket": bucket})
    return tally


def write_rejects(layout: Layout, late: list[dict[str, Any]], path: str | None = None) -> dict[str, int]:
    """Merge the early rejects with ``late`` (sorted by seq) into ``path`` (default rejects.parquet);
    counts by reason."""
    reasons: Counter[str] = Counter()
    late_seq = np.asarray([r["seq"] for r in late], np.int64)
    used = 0

    def emit(out, table: pa.Table) -> None:
        if table.num_rows:
            out.write_table(table, row_group_size=ROW_GROUP)
            for item in pc.value_counts(table["reason"]).to_pylist():
                reasons[item["values"]] += item["counts"]

    with atomic_parquet(layout, path or layout.rejects, REJECT_SCHEMA) as out:
        for batch in parquet_batches(layout, layout.early_rejects):
            batch = batch.cast(REJECT_SCHEMA)
            if batch.num_rows == 0:
                continue
            upto = int(np.searchsorted(late_seq, pc.max(batch["seq"]).as_py(), side="right"))
            if upto > used:
                extra = pa.Table.from_pylist(late[used:upto], schema=REJECT_SCHEMA)
                batch = pa.concat_tables([batch, extra]).sort_by("seq")
                used = upto
            emit(out, batch)
        emit(out, pa.Table.from_pylist(late[used:], schema=REJECT_SCHEMA))
    return dict(reasons)


def dataset_card_bytes(layout: Layout, config: Mapping[str, Any], contract: int) -> bytes:
    """OUT/README.md for the build as it stands: its features (``config``: the build's config as a
    dict) and its fingerprint, the sha256 of shards.json (so HF never serves a cached other build)."""
    fingerprint = hashlib.sha256(layout.read_bytes(layout.shards_json)).hexdigest()
    card = dataset_card(
        [e["name"] for e in config["extractors"]],
        config.get("shards", {}).get("image_format", "jpg"),
        bool(config.get("augment", {}).get("enabled", False)),  # older builds' configs may lack it
        fingerprint,
        txt=contract >= TXT_SINCE_CONTRACT,
    )
    return card.encode("utf-8")


def write_dataset_card(layout: Layout, config: Mapping[str, Any], contract: int) -> None:
    """Called after every write of shards.json: the build, each append and retry, and reweight (a
    no-op there, as weights change no row); the repair rebuilds it with ``dataset_card_bytes``."""
    layout.write_bytes(layout.dataset_card, dataset_card_bytes(layout, config, contract))
