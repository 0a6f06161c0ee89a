"""The build's final tables, streamed: manifest.parquet from plan.parquet one row group at a time,
rejects.parquet by merging the early rejects (already sorted by ``seq``) with the late ones.

The driver keeps only a bucket code per sample for the counts, never the rows or a Python object
per tag. Weights are not here (contract 2): the build solves its first version from the manifest.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.records import TAG_CATEGORIES
from curation.weighting import WeightError
from groundwork.contract import CONTRACT_VERSION
from sharding.integrity import FILES, commit, record_files
from sharding.layout import Layout
from sharding.schema import MANIFEST_SCHEMA, REJECT_COLUMNS, REJECT_SCHEMA
from sharding.weights import FIRST_VERSION, read_version

from ..columnar import ROW_GROUP, atomic_parquet, bucket_labels, codes, concat_lists, parquet_batches
from ..config import ConfigError
from ..tools.reweight import manifest_inputs, policy_meta, write_first_version
from .base import Increment, IntegrityError, snapshot_tables
from .card import write_dataset_card
from .plan import PlanReader
from .request import RETRY, BuildRequest, BuildSummary
from .scan import scan_table

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






def finalize(
    req: BuildRequest, layout: Layout, chunks: int, plan: PlanReader, states: dict[str, dict[str, Any]],
    timings: dict[str, float], extractor_records: dict[str, dict[str, Any]],
    scorer_records: dict[str, dict[str, Any]] | None = None,
) -> BuildSummary:  # fmt: skip
    """manifest.parquet, rejects.parquet, shards.json, build.json: streamed row group by row group;
    then the first weight version, solved from the manifest's weight columns only."""
    late = sorted((r for s in states.values() for r in s["rejects"]), key=lambda r: r["seq"])
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}
    tally = write_manifest(
        layout,
        {r["key"] for r in late},
        [e.name for e in req.config.extractors],
        dropped,
    )
    reasons = write_rejects(layout, late)

    shards = sorted((s["stats"] for s in states.values()), key=lambda s: s["path"])
    layout.write_json(layout.shards_json, {"shards": shards})

    inputs = layout.read_json(layout.enumerated)["inputs"]
    cfg = req.config.weights
    weights = write_first_version(
        layout, layout.read_parquet(layout.manifest, columns=manifest_inputs(cfg)), cfg
    )
    counts = make_counts(tally.samples, reasons, tally.counts("bucket"), shards, inputs, dropped)
    # README.md (an HF dataset card) before build.json, the marker that says the build is complete
    write_dataset_card(layout, req.config.to_dict(), CONTRACT_VERSION)
    build = {
        "complete": True,
        "contract": CONTRACT_VERSION,
        "request": req.identity(),
        "counts": counts,
        "weights": weights,
        "weights_active": FIRST_VERSION,
        "timings": timings,
        "extractors": extractor_records,
        "scorers": scorer_records or {},
        "versions": _versions(),
        # what the commit wrote, for every later check (sharding/integrity.py)
        FILES: record_files(layout, {FIRST_VERSION: policy_meta(cfg)}),
    }
    commit(layout, build)
    return BuildSummary(req.out, counts, timings, weights=weights)


def manifest_of(extractors: list[str], plan_table: pa.Table, states: dict[str, dict[str, Any]]) -> pa.Table:
    """The manifest rows of the plan rows that were written (all but the late rejects), in plan order.

    For an increment's small plan; the build streams its manifest (pipelines/finalize.py)."""
    late = pa.array(sorted({r["key"] for s in states.values() for r in s["rejects"]}), pa.string())
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}
    return manifest_rows(plan_table, late, extractors, dropped)


def late_rejects(states: dict[str, dict[str, Any]]) -> pa.Table:
    """Rejects of the materialize phase (pair quality, a file changed since the scan)."""
    return pa.Table.from_pylist([r for s in states.values() for r in s["rejects"]], schema=REJECT_SCHEMA)


def count(
    manifest: pa.Table, rejects: pa.Table, shards: list[dict[str, Any]], inputs: int,
    dropped: dict[str, dict[str, str]], weights: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """build.json's ``counts`` from whole tables (an increment's); see ``make_counts``."""
    reasons = {r["values"]: r["counts"] for r in pc.value_counts(rejects["reason"]).to_pylist()}
    buckets = bucket_labels(manifest)
    by_bucket = {r["values"]: r["counts"] for r in pc.value_counts(buckets).to_pylist()}
    return make_counts(manifest.num_rows, reasons, by_bucket, shards, inputs, dropped)


def make_counts(
    samples: int, reasons: dict[str, int], buckets: dict[str, int], shards: list[dict[str, Any]],
    inputs: int, dropped: dict[str, dict[str, str]],
) -> dict[str, Any]:  # fmt: skip
    """build.json's ``counts``; refuses an input that is neither kept nor rejected."""
    counts = {
        "inputs": inputs,
        "samples": samples,
        "rejected": sum(reasons.values()),
        "rejects_by_reason": reasons,
        "shards": len(shards),
        "bytes": sum(s["bytes"] for s in shards),
        "buckets": buckets,
        "drawings_dropped": dict(Counter(name for why in dropped.values() for name in why)),
    }
    if counts["samples"] + counts["rejected"] != inputs:

        raise IntegrityError(
            f"accounting error: {counts['samples']} kept + {counts['rejected']} rejected != {inputs} inputs; "
            "OUT's tables disagree with its records (`linepairs verify OUT` names the files)"
        )
    return counts


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("linepairs", "numpy", "opencv-python-headless", "pillow", "pyarrow", "ray", "torch", "timm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


HISTORY_SCHEMA = REJECT_SCHEMA.append(pa.field("superseded_in", pa.int64()))  # the increment that retried it


@dataclasses.dataclass
class IncrementTables:
    """The public tables after one increment, from the tables before it and the increment's own files."""

    manifest: pa.Table
    new_rows: pa.Table  # the increment's manifest rows
    rejects: pa.Table
    fresh_rejects: int  # reject rows this increment added
    history: pa.Table  # rejects_history (may be empty: then no file is written)
    shards: list[dict[str, Any]]  # shards.json entries


def increment_tables(
    layout: Layout, inc: Increment, meta: dict[str, Any], enumerated: dict[str, Any], plan: pa.Table,
    states: dict[str, dict[str, Any]], extractors: list[str], before: dict[str, Any],
) -> IncrementTables:  # fmt: skip
    """The tables after increment ``inc``. ``before``: manifest, rejects, history (tables, history
    None when there is none) and shards (shards.json entries) as they were: the snapshot for a
    finalize, the replayed tables for a repair (pipelines/repair.py). A pure function of these and
    the increment's files, so both give the same bytes."""

    old_manifest = before["manifest"]
    new_rows = manifest_of(extractors, plan, states)
    manifest = pa.concat_tables([old_manifest, new_rows.cast(old_manifest.schema)])

    scanned = scan_table(
        layout, enumerated["first_chunk"], enumerated["chunks"], REJECT_COLUMNS + ["status"]
    )
    fresh = [layout.read_parquet(inc.dedup_rejects).cast(REJECT_SCHEMA), late_rejects(states)]
    if scanned is not None:
        fresh.insert(
            0,
            scanned.filter(pc.equal(scanned["status"], "rejected"))
            .select(REJECT_COLUMNS)
            .cast(REJECT_SCHEMA),
        )
    old_rejects = before["rejects"].cast(REJECT_SCHEMA)
    retried = pa.array([], pa.int64())
    if meta["kind"] == RETRY and scanned is not None:
        retried = pa.chunked_array(
            [
                layout.read_parquet(layout.records_part(c), columns=["seq"])["seq"]
                for c in range(enumerated["first_chunk"], enumerated["chunks"])
            ]
        ).combine_chunks()
    was_retried = pc.is_in(old_rejects["seq"], retried)
    rejects = pa.concat_tables([old_rejects.filter(pc.invert(was_retried)), *fresh]).sort_by("seq")
    superseded = old_rejects.filter(was_retried)
    history_parts = []
    if before["history"] is not None:
        history_parts.append(before["history"].cast(HISTORY_SCHEMA))
    history_parts.append(
        superseded.append_column("superseded_in", pa.array([inc.number] * superseded.num_rows, pa.int64()))
    )
    history = pa.concat_tables(history_parts)
    new_shards = [s["stats"] for s in states.values()]
    shards = sorted(before["shards"] + new_shards, key=lambda s: s["path"])
    return IncrementTables(manifest, new_rows, rejects, sum(t.num_rows for t in fresh), history, shards)


def write_tables(layout: Layout, tables: IncrementTables, base_build: dict[str, Any]) -> None:
    layout.write_parquet(layout.manifest, tables.manifest)
    layout.write_parquet(layout.rejects, tables.rejects)
    if tables.history.num_rows:
        layout.write_parquet(layout.rejects_history, tables.history)
    layout.write_json(layout.shards_json, {"shards": tables.shards})
    # the card names the grown build, so HF datasets never serves its cache of the old one
    write_dataset_card(layout, base_build["request"]["config"], base_build["contract"])


def finalize_increment(
    req, layout: Layout, inc: Increment, meta: dict[str, Any], enumerated: dict[str, Any], plan: pa.Table,
    states: dict[str, dict[str, Any]], seconds: float,
) -> Any:  # fmt: skip
    """Rewrite the public files from the snapshot and the increment's files, then commit build.json
    with the increment recorded (a kill anywhere resumes to the same bytes)."""
    from sharding.integrity import commit, record_files

    from ..tools.reweight import policies_of, resolve_all, summarize

    before = snapshot_tables(layout, inc)
    base_build = before["build"]
    tables = increment_tables(
        layout, inc, meta, enumerated, plan, states, [e.name for e in req.config.extractors], before
    )
    write_tables(layout, tables, base_build)
    manifest = tables.manifest

    policies = policies_of(layout, base_build)
    try:
        versions, policies = resolve_all(layout, manifest, policies, base_build.get("weights_active"),
                                         given=req.config.weights)  # fmt: skip
    except WeightError as exc:
        raise ConfigError(f"{exc}; run `linepairs reweight {req.out} --config FILE --activate` with a policy "
                          "for every source, then the same command again") from None  # fmt: skip
    notes = [f"weights {name}: {what}" for name, what in versions.items() if what != "ok"]
    for line in notes:  # said even with -q: a version removed, or the command's [weights] not active
        print(f"linepairs: {line}", file=sys.stderr, flush=True)

    active_name, active, meta_w = read_version(layout, base_build.get("weights_active"), recorded=False)
    training = meta_w.get("weights", {}).get("training_samples", req.config.weights.training_samples)
    weights = summarize(manifest, active, training)

    inputs = base_build["counts"]["inputs"] + enumerated["inputs"]
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}
    old_dropped = base_build["counts"].get("drawings_dropped", {})
    counts = count(manifest, tables.rejects, tables.shards, inputs, dropped, weights)
    for name, n in old_dropped.items():
        counts["drawings_dropped"][name] = counts["drawings_dropped"].get(name, 0) + n
    record = {
        "number": inc.number,
        "kind": meta["kind"],
        **({"reasons": meta["reasons"]} if meta["kind"] == RETRY else {}),
        "sources": meta["sources"],
        "config_changes": meta["config_changes"],
        "inputs": enumerated["inputs"],
        "scanned": enumerated["scanned"],
        "kept": tables.new_rows.num_rows,
        "rejected": tables.fresh_rejects,
        "shards": sorted(s["stats"]["path"] for s in states.values()),
        "weights": versions,
        "seconds": round(seconds, 3),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    build = {
        **base_build,
        "counts": counts,
        "weights": weights,
        "weights_active": active_name,
        "appends": [*base_build.get("appends", []), record],
        "files": record_files(layout, policies),
    }
    commit(layout, build)
    return BuildSummary(req.out, counts, {"total": seconds}, weights=weights, notes=notes)
