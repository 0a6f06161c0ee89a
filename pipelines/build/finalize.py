"""The build's final tables, streamed: manifest.parquet from plan.parquet one row group at a time,
rejects.parquet by merging the early rejects (already sorted by ``seq``) with the late ones.

The driver keeps only a bucket code per sample for the counts, never the rows or a Python object
per tag. Weights are not here (contract 2): the build solves its first version from the manifest.
"""

from __future__ import annotations

import platform
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
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
from .base import Base, Increment, IntegrityError, snapshot_tables
from .card import write_dataset_card
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


class RejectMerge:
    """Reject rows sorted by ``seq`` written as a merge: batches of a sorted table, each with the
    rows of ``extra`` (sorted by seq, stably) up to a seq; counts by reason. No input has rows on
    both sides, so the result is the stable sort of the whole."""

    def __init__(self, writer: Any, extra: pa.Table) -> None:
        self.writer, self.extra, self.used = writer, extra, 0
        self.seq = extra["seq"].to_numpy(zero_copy_only=False)
        self.reasons: Counter[str] = Counter()

    def add(self, batch: pa.Table, upto_seq: int) -> None:
        """``batch`` and the extra rows with seq <= ``upto_seq`` not yet written."""
        upto = max(self.used, int(np.searchsorted(self.seq, upto_seq, side="right")))
        self._write(pa.concat_tables([batch, self.extra.slice(self.used, upto - self.used)]).sort_by("seq"))
        self.used = upto

    def finish(self) -> dict[str, int]:
        self._write(self.extra.slice(self.used))
        return dict(self.reasons)

    def _write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table, row_group_size=ROW_GROUP)
            for item in pc.value_counts(table["reason"]).to_pylist():
                self.reasons[item["values"]] += item["counts"]


def finalize(
    req: BuildRequest, layout: Layout, base: Base, work: dict[str, Any], states: dict[str, dict[str, Any]],
    timings: dict[str, float], extractor_records: dict[str, dict[str, Any]],
    scorer_records: dict[str, dict[str, Any]] | None = None,
) -> BuildSummary:  # fmt: skip
    """The phase's one entry: the public tables of the base plus what this build added, streamed
    through one writer (``write_tables``: the empty base has no rows), shards.json, then build.json
    committed. Onto the empty base the first weight version is solved; onto a finished build every
    version is re-solved over the union and the increment is recorded under ``appends``."""
    if base.inc is None:
        before, step = EMPTY_TABLES, build_step(layout, states)
    else:
        before, step = (
            snapshot_tables(layout, base.inc),
            increment_step(layout, base.inc, base.meta, work, states),
        )
    out = {"manifest": layout.manifest, "rejects": layout.rejects, "history": layout.rejects_history}
    tables = write_tables(layout, step, states, [e.name for e in req.config.extractors], before, out)
    layout.write_json(layout.shards_json, {"shards": tables.shards})
    if base.inc is None:
        return _commit_build(req, layout, tables, states, timings, extractor_records, scorer_records)
    return _commit_increment(
        req, layout, base.inc, base.meta, work, before["build"], tables, states, timings["total"]
    )


def _commit_build(
    req: BuildRequest, layout: Layout, tables: Tables, states: dict[str, dict[str, Any]],
    timings: dict[str, float], extractor_records: dict[str, dict[str, Any]],
    scorer_records: dict[str, dict[str, Any]] | None,
) -> BuildSummary:  # fmt: skip
    """The first weight version, solved from the manifest's weight columns only; build.json."""
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}
    inputs = layout.read_json(layout.enumerated)["inputs"]
    cfg = req.config.weights
    weights = write_first_version(
        layout, layout.read_parquet(layout.manifest, columns=manifest_inputs(cfg)), cfg
    )
    counts = make_counts(tables.samples, tables.reasons, tables.buckets, tables.shards, inputs, dropped)
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


def late_rejects(states: dict[str, dict[str, Any]]) -> pa.Table:
    """Rejects of the materialize phase (pair quality, a file changed since the scan)."""
    return pa.Table.from_pylist([r for s in states.values() for r in s["rejects"]], schema=REJECT_SCHEMA)


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
TABLES_OF = ("manifest", "rejects", "history")  # the tables an increment rewrites (paths by these names)
# the empty base: no rows before a fresh build (what ``snapshot_tables`` gives onto a finished one)
EMPTY_TABLES: dict[str, Any] = {"manifest": None, "rejects": None, "history": None, "shards": []}


@dataclass
class Step:
    """What one commit adds to the tables: the fresh build (number 0) or increment ``number``."""

    number: int  # the increment a retried input's old reject rows are superseded in
    plan: Iterable[pa.Table]  # its plan rows, as tables (the build's streamed by row group)
    early: str | None  # its reject rows on file, sorted by seq (the build's scan, dedup and too small)
    held: pa.Table  # its other reject rows, stably sorted by seq (late; an increment's own ones all)
    retried: pa.Array  # seqs whose old reject rows leave for the history (a retry)


def build_step(layout: Layout, states: dict[str, dict[str, Any]]) -> Step:
    """The fresh build's rows: plan.parquet and the early rejects streamed, the late rejects held."""
    late = sorted((r for s in states.values() for r in s["rejects"]), key=lambda r: r["seq"])
    held = pa.Table.from_pylist(late, schema=REJECT_SCHEMA)
    return Step(0, parquet_batches(layout, layout.plan), layout.early_rejects, held, pa.array([], pa.int64()))


def increment_step(
    layout: Layout, inc: Increment, meta: dict[str, Any], enumerated: dict[str, Any],
    states: dict[str, dict[str, Any]],
) -> Step:  # fmt: skip
    """An increment's rows: its own plan and rejects, small, held."""
    held = _fresh_rejects(layout, inc, enumerated, states)
    return Step(
        inc.number, [layout.read_parquet(inc.plan)], None, held, _retried_seqs(layout, meta, enumerated)
    )


@dataclass
class Tables:
    """What the tables came to after one step (the tables themselves are files)."""

    samples: int  # manifest rows
    new_rows: int  # the step's manifest rows
    reasons: dict[str, int]  # reject rows by reason
    fresh_rejects: int  # reject rows the step added
    buckets: dict[str, int]  # manifest rows by bucket
    shards: list[dict[str, Any]]  # shards.json entries


def _fresh_rejects(
    layout: Layout, inc: Increment, enumerated: dict[str, Any], states: dict[str, dict[str, Any]]
) -> pa.Table:
    """The increment's own reject rows (scan, dedup and too-small from its plan, late), stably sorted by seq."""
    if layout.exists(inc.early_rejects):
        early = layout.read_parquet(inc.early_rejects).cast(REJECT_SCHEMA)
    else:  # planned before the plan wrote an increment's scan rejects too (dedup_rejects.parquet)
        scanned = scan_table(
            layout, enumerated["first_chunk"], enumerated["chunks"], REJECT_COLUMNS + ["status"]
        )
        early = pa.concat_tables([
            scanned.filter(pc.equal(scanned["status"], "rejected")).select(REJECT_COLUMNS).cast(REJECT_SCHEMA),
            layout.read_parquet(inc.path("dedup_rejects.parquet")).cast(REJECT_SCHEMA),
        ])  # fmt: skip
    return pa.concat_tables([early, late_rejects(states)]).sort_by("seq")


def _retried_seqs(layout: Layout, meta: dict[str, Any], enumerated: dict[str, Any]) -> pa.Array:
    if meta["kind"] != RETRY or enumerated["chunks"] == enumerated["first_chunk"]:
        return pa.array([], pa.int64())
    parts = [
        layout.read_parquet(layout.records_part(c), columns=["seq"])["seq"]
        for c in range(enumerated["first_chunk"], enumerated["chunks"])
    ]
    return pa.chunked_array(parts, pa.int64()).combine_chunks()


def write_tables(
    layout: Layout, step: Step, states: dict[str, dict[str, Any]], extractors: list[str],
    before: dict[str, Any], out: dict[str, str],
) -> Tables:  # fmt: skip
    """The tables after ``step``, streamed into the paths ``out`` (manifest, rejects, history) from
    ``before``: the paths of the tables as they were (None: no such table; ``EMPTY_TABLES`` before a
    fresh build) and ``shards`` (shards.json entries): the snapshot for a finalize, the previous step
    for a repair (pipelines/build/repair.py). Rows pass one row group at a time (bounded memory);
    only what the step holds is in memory. A pure function of these and the build's files, so a
    finalize and a repair give the same bytes."""
    tally = Tally()
    late = pa.array(sorted({r["key"] for s in states.values() for r in s["rejects"]}), pa.string())
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}

    def add_manifest(writer, table: pa.Table) -> int:
        if table.num_rows:
            writer.write_table(table, row_group_size=ROW_GROUP)
            tally.add(table.num_rows, {"bucket": bucket_labels(table)})
        return table.num_rows

    new_rows = 0
    with atomic_parquet(layout, out["manifest"], MANIFEST_SCHEMA) as writer:
        if before["manifest"] is not None:
            for batch in parquet_batches(layout, before["manifest"]):
                add_manifest(writer, batch.cast(MANIFEST_SCHEMA))
        for plan_rows in step.plan:
            new_rows += add_manifest(writer, manifest_rows(plan_rows, late, extractors, dropped))

    # Sorted reject rows streamed (the old ones, or a fresh build's early ones: never both) merged
    # with the step's held rows; a retried input's old rows leave (to the history), so no input has
    # rows on both sides.
    assert before["rejects"] is None or step.early is None, "a step's rejects on file go onto the empty base"
    superseded: list[pa.Table] = []
    fresh = step.held.num_rows
    with atomic_parquet(layout, out["rejects"], REJECT_SCHEMA) as writer:
        merge = RejectMerge(writer, step.held)
        for path in (before["rejects"], step.early):
            if path is None:
                continue
            for batch in parquet_batches(layout, path):
                batch = batch.cast(REJECT_SCHEMA)
                if batch.num_rows == 0:
                    continue
                if path == step.early:
                    fresh += batch.num_rows
                was_retried = pc.is_in(batch["seq"], step.retried)
                superseded.append(batch.filter(was_retried))
                merge.add(batch.filter(pc.invert(was_retried)), pc.max(batch["seq"]).as_py())
        reasons = merge.finish()

    gone = pa.concat_tables(superseded) if superseded else REJECT_SCHEMA.empty_table()
    gone = gone.append_column("superseded_in", pa.array([step.number] * gone.num_rows, pa.int64()))
    if before["history"] is not None or gone.num_rows:
        with atomic_parquet(layout, out["history"], HISTORY_SCHEMA) as writer:
            if before["history"] is not None:
                for batch in parquet_batches(layout, before["history"]):
                    if batch.num_rows:
                        writer.write_table(batch.cast(HISTORY_SCHEMA), row_group_size=ROW_GROUP)
            if gone.num_rows:
                writer.write_table(gone.cast(HISTORY_SCHEMA), row_group_size=ROW_GROUP)
    new_shards = [s["stats"] for s in states.values()]
    shards = sorted(before["shards"] + new_shards, key=lambda s: s["path"])
    return Tables(tally.samples, new_rows, reasons, fresh, tally.counts("bucket"), shards)


def _commit_increment(
    req, layout: Layout, inc: Increment, meta: dict[str, Any], enumerated: dict[str, Any],
    base_build: dict[str, Any], tables: Tables, states: dict[str, dict[str, Any]], seconds: float,
) -> Any:  # fmt: skip
    """Every weight version re-solved over the union; build.json with the increment recorded (a
    kill anywhere resumes to the same bytes)."""
    from ..tools.reweight import policies_of, resolve_all, solve_columns, summarize

    # the card names the grown build, so HF datasets never serves its cache of the old one
    write_dataset_card(layout, base_build["request"]["config"], base_build["contract"])

    policies = policies_of(layout, base_build)
    manifest = layout.read_parquet(layout.manifest, columns=solve_columns(policies, req.config.weights))
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
    del manifest

    inputs = base_build["counts"]["inputs"] + enumerated["inputs"]
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}
    counts = make_counts(tables.samples, tables.reasons, tables.buckets, tables.shards, inputs, dropped)
    for name, n in base_build["counts"].get("drawings_dropped", {}).items():
        counts["drawings_dropped"][name] = counts["drawings_dropped"].get(name, 0) + n
    record = {
        "number": inc.number,
        "kind": meta["kind"],
        **({"reasons": meta["reasons"]} if meta["kind"] == RETRY else {}),
        "sources": meta["sources"],
        "config_changes": meta["config_changes"],
        "inputs": enumerated["inputs"],
        "scanned": enumerated["scanned"],
        "kept": tables.new_rows,
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
