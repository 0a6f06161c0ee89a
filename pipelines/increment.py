"""``build --append`` and ``build --retry``: grow or repair a finished build without touching its shards.

An increment (one append or one retry) is a small build of its own next to the finished one:

* **enumerate** the given sources and keep only the inputs not yet seen (append; by source and
  source_id) or the inputs rejected for the given reasons (retry; they keep their ``seq``), into
  records chunks numbered after the existing ones;
* **scan** those chunks (the per-source score cuts of existing sources come from their original
  records, so a source's curation does not drift between increments);
* **plan**: deduplicate the newly kept samples against everything already kept (the existing
  manifest's hashes are the index; an old sample always wins, so ``duplicate_of`` points into
  the old build) and among themselves, then cut new shards numbered after the existing ones;
* **materialize** the new shards (the existing ones are never opened);
* **finalize** from snapshots of the build as it was (hard links taken when the increment
  started): manifest = old rows + new rows, rejects updated (a retried input's old row moves to
  ``rejects_history.parquet``), shards.json, every weight version re-solved over the union,
  build.json with the increment recorded under ``appends``.

Every step leaves a marker only once its output is complete, and finalize is a pure function of
the snapshots and the increment's own files, so a kill at any moment resumes to the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import resolve
from curation.records import REJECT_REASONS
from curation.scan import ScanSettings
from curation.sources import check_metadata, iter_records
from curation.weighting import WeightError
from groundwork.configtable import diff_dicts
from sharding.integrity import check_build, committed, read_shards
from sharding.layout import BUILD_JSON, MANIFEST, REJECTS, REJECTS_HISTORY, SHARDS_JSON, Layout
from sharding.plan import make_plan, shard_index, split_too_small
from sharding.schema import RECORD_SCHEMA, REJECT_COLUMNS, REJECT_SCHEMA, SCAN_SCHEMA
from sharding.weights import read_version

from .config import ConfigError
from .dedup import find_pairs
from .finalize import write_dataset_card

APPEND, RETRY = "append", "retry"
# Sections a retry may change: curation settings read by the scan ("all rejects after a curation change").
RETRY_MAY_CHANGE = ("filters", "metrics", "quality")
ALL_REASONS = "all"
SNAPSHOT = (MANIFEST, REJECTS, SHARDS_JSON, BUILD_JSON, REJECTS_HISTORY)
HISTORY_SCHEMA = REJECT_SCHEMA.append(pa.field("superseded_in", pa.int64()))  # the increment that retried it


def known_reasons() -> set[str]:
    return {r for reasons in REJECT_REASONS.values() for r in reasons}


def parse_reasons(text: str) -> tuple[str, ...]:
    """``missing_file,decode_error`` or ``all`` -> reasons; ConfigError naming an unknown one."""
    reasons = tuple(sorted({r.strip() for r in text.split(",") if r.strip()}))
    if not reasons:
        raise ConfigError("--retry needs REASON[,REASON] (see docs/rejects.md) or 'all'")
    if ALL_REASONS in reasons:
        return (ALL_REASONS,)
    unknown = sorted(set(reasons) - known_reasons())
    if unknown:
        raise ConfigError(
            f"--retry: unknown reject reason(s) {', '.join(unknown)}; the reasons are in docs/rejects.md"
        )
    return reasons


# ---------------------------------------------------------------- where an increment keeps its state


class Increment:
    """Paths of increment ``number`` (``Layout.increment``; private to the build)."""

    def __init__(self, layout: Layout, number: int) -> None:
        self.layout, self.number = layout, number
        self.dir = layout.increment(number)

    def path(self, *parts: str) -> str:
        return self.layout.increment(self.number, *parts)

    @property
    def request(self) -> str:
        return self.path("request.json")

    @property
    def enumerated(self) -> str:
        return self.path("enumerated.json")

    @property
    def plan(self) -> str:
        return self.path("plan.parquet")

    @property
    def dedup_rejects(self) -> str:
        return self.path("dedup_rejects.parquet")

    def base(self, name: str) -> str:
        return self.path("base", name)

    def remove(self) -> None:
        for path in list(self.layout.files(self.dir)):
            self.layout.remove(path)
        if self.layout.local and os.path.isdir(self.dir):
            shutil.rmtree(self.dir)


def _snapshot(layout: Layout, inc: Increment) -> None:
    """The finished build's files as they were: hard links locally (they are replaced by rename,
    never written in place), copies on an object store."""
    for name in SNAPSHOT:
        src, dst = layout.path(name), inc.base(name)
        if not layout.exists(src) or layout.exists(dst):
            continue
        if layout.local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
                continue
            except OSError:  # a filesystem without hard links
                pass
        layout.write_bytes(dst, layout.read_bytes(src))


def _spec_without_share(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "share"}


def base_build(layout: Layout, kind: str) -> tuple[dict[str, Any], Any]:
    """(the committed build.json an increment starts from, its Finished record for the repair, or
    None when an increment is in flight: its finalize rewrites the public files from its snapshot).

    When build.json and its copy are both lost, the last increment's snapshot holds the build as it
    was before it: that increment is then resumed (finishing it commits a new build.json)."""
    from .build import BuildRefused
    from .repair import Finished, last_increment

    record, problems = committed(layout)
    if record is None:
        last = last_increment(layout)
        if not last:
            raise BuildRefused(
                f"{layout.out} has no finished build to {kind} to; finish it first (the same command without --{kind})"
            )
        snapshot = Increment(layout, last).base(BUILD_JSON)
        record = check_build(layout.read_json(snapshot), layout.display(snapshot))
        return record, None
    in_flight = layout.exists(Increment(layout, len(record.get("appends", [])) + 1).request)
    return record, None if in_flight else Finished(record, problems)


def check_increment(req, layout: Layout, kind: str, build: dict[str, Any]) -> dict[str, Any]:
    """What this increment records as its request (``build``: the committed build.json); BuildRefused
    on a conflicting request."""
    from .build import BuildRefused

    base = build["request"]
    new = req.identity()
    may_change = {"weights", "sources", *(RETRY_MAY_CHANGE if kind == RETRY else ())}
    old_cfg = {k: v for k, v in base["config"].items() if k not in may_change}
    new_cfg = {k: v for k, v in new["config"].items() if k not in may_change}
    changes = diff_dicts(old_cfg, new_cfg)
    if changes or base["contract"] != new["contract"]:
        shown = "; ".join(changes[:6]) or f"contract {base['contract']} -> {new['contract']}"
        raise BuildRefused(
            f"--{kind} cannot change settings that decide the pixels of the existing shards ({shown}); "
            f"build into a new --out for that (`linepairs build SOURCE... --out NEW_OUT`)"
        )
    known = {s["name"]: s for s in base["sources"]}
    for rec in build.get("appends", []):
        known.update({s["name"]: s for s in rec.get("sources", [])})
    for spec in new["sources"]:
        old = known.get(spec["name"])
        if old is not None and _spec_without_share(old) != _spec_without_share(spec):
            raise BuildRefused(
                f"source {spec['name']!r} was {_spec_without_share(old)} in {req.out}, now "
                f"{_spec_without_share(spec)}; give a new source a new name"
            )
    return {
        "kind": kind,
        "reasons": list(req.retry),
        "sources": new["sources"],
        "config": new["config"],
        "config_changes": diff_dicts(base["config"], new["config"]),
    }


# ---------------------------------------------------------------- phases


def _part_numbers(layout: Layout, folder: str) -> list[int]:
    names = (os.path.basename(p) for p in layout.files(folder))
    return sorted(
        int(n[5:11]) for n in names if n.startswith("part-") and n.endswith(".parquet") and ".tmp-" not in n
    )


def _records_chunks(layout: Layout) -> int:
    """The first chunk number free in both records and scan parts: a build's scan units may slice
    its records parts (more scan parts than records parts); an increment's chunks are one of each."""
    used = _part_numbers(layout, layout.records_dir) + _part_numbers(layout, layout.scan_dir)
    return max(used) + 1 if used else 0


def _records_parts(layout: Layout, below: int) -> list[int]:
    """The records parts numbered below ``below`` (numbers may skip: see ``_records_chunks``)."""
    return [c for c in _part_numbers(layout, layout.records_dir) if c < below]


def _seen_ids(layout: Layout, chunks: list[int]) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    for c in chunks:
        t = layout.read_parquet(layout.records_part(c), columns=["source", "source_id"])
        seen.update(zip(t["source"].to_pylist(), t["source_id"].to_pylist(), strict=True))
    return seen


def enumerate_increment(req, layout: Layout, inc: Increment, meta: dict[str, Any]) -> dict[str, Any]:
    """Records chunks of the unseen inputs (append) or of the retried rejects (retry)."""
    if layout.exists(inc.enumerated):
        return layout.read_json(inc.enumerated)
    from .build import predicts_tags

    check_metadata(req.sources, req.config.filters, predicts_tags(req.config), req.storage)
    first_chunk, first_seq = meta["first_chunk"], meta["first_seq"]
    if meta["kind"] == APPEND:
        seen = _seen_ids(layout, _records_parts(layout, first_chunk))
        targets: dict[tuple[str, str], int] = {}
    else:
        seen = set()
        rejects = layout.read_parquet(inc.base(REJECTS), columns=["seq", "source", "source_id", "reason"])
        if meta["reasons"] != [ALL_REASONS]:
            rejects = rejects.filter(pc.is_in(rejects["reason"], pa.array(meta["reasons"])))
        targets = {
            (s, i): q
            for q, s, i in zip(
                rejects["seq"].to_pylist(), rejects["source"].to_pylist(), rejects["source_id"].to_pylist()
            )
        }
    from .build import RECORDS_PART

    size = req.config.scan.chunk_size or RECORDS_PART
    chunk, rows, seq, count = first_chunk, [], first_seq, 0

    def flush() -> None:
        nonlocal chunk, rows
        path = layout.records_part(chunk)
        if not layout.exists(path):  # a re-enumeration after a kill yields the same chunks
            layout.write_parquet(path, pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
        chunk, rows = chunk + 1, []

    taken: set[tuple[str, str]] = set()
    for spec in req.sources:
        for rec in iter_records(spec, req.storage):
            ident = (rec.source, rec.source_id)
            if ident in taken:  # the source itself repeats an id: the first one stands for it
                continue
            row = rec.to_row()
            if meta["kind"] == APPEND:
                if ident in seen:
                    continue
                row["seq"] = seq
                seq += 1
            else:
                if ident not in targets:
                    continue
                row["seq"] = targets[ident]
            taken.add(ident)
            rows.append(row)
            count += 1
            if len(rows) == size:
                flush()
    if rows:
        flush()
    done = {
        "first_chunk": first_chunk,
        "chunks": chunk,
        "inputs": count if meta["kind"] == APPEND else 0,
        "scanned": count,
    }
    layout.write_json(inc.enumerated, done)
    return done


def increment_settings(req, layout: Layout, first_chunk: int, end_chunk: int) -> ScanSettings:
    """Score cuts of each source from its original records: old sources keep theirs."""
    cols = ["source", "score", "fav_count"]
    old = [
        layout.read_parquet(layout.records_part(c), columns=cols) for c in _records_parts(layout, first_chunk)
    ]
    new = [layout.read_parquet(layout.records_part(c), columns=cols) for c in range(first_chunk, end_chunk)]
    old_t = pa.concat_tables(old) if old else None
    parts = [old_t] if old_t is not None else []
    if new:
        new_t = pa.concat_tables(new)
        old_sources = pa.array(
            sorted(set(old_t["source"].to_pylist())) if old_t is not None else [], pa.string()
        )
        parts.append(new_t.filter(pc.invert(pc.is_in(new_t["source"], old_sources))))
    records = pa.concat_tables(parts)
    from .build import settings_from_records

    return settings_from_records(req.config, records, req.storage)


def _scan_table(layout: Layout, first: int, end: int, columns: list[str] | None = None) -> pa.Table | None:
    parts = [layout.read_parquet(layout.scan_part(c), columns=columns) for c in range(first, end)]
    return pa.concat_tables(parts) if parts else None


def dedup_against(old: pa.Table, new: pa.Table, cfg) -> tuple[pa.Table, list[dict[str, Any]]]:
    """New kept samples without duplicates of each other or of ``old`` (the existing manifest).

    One component search over old + new; an old sample always keeps its place (its score counts
    as infinite), so ``duplicate_of`` of a new sample in a group with an old one names an old key.
    """
    if not cfg.enabled or new.num_rows == 0:
        return new, []
    n_old = old.num_rows
    cols = ["key", "seq", "phash", "sha256", "quality_score", "width", "height"]
    both = pa.concat_tables([old.select(cols), new.select(cols)])
    phash = both["phash"].to_numpy(zero_copy_only=False).astype(np.int64)
    pairs, _ = find_pairs(phash, cfg)
    score = both["quality_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    score[:n_old] = np.inf
    pixels = (
        both["width"].to_numpy(zero_copy_only=False) * both["height"].to_numpy(zero_copy_only=False)
    ).astype(np.float64)
    sha = np.asarray(both["sha256"].to_pylist(), dtype=object)
    result = resolve(pairs, sha, score, pixels, both["seq"].to_numpy(zero_copy_only=False))
    keys = both["key"].to_pylist()
    unsigned = phash.view(np.uint64)
    ids = new.select(["seq", "source", "source_id", "key", "location"]).to_pylist()
    keep = np.ones(new.num_rows, bool)
    rejects = []
    for d in range(new.num_rows):
        k = int(result.keeper[n_old + d])
        if k == n_old + d:
            continue
        keep[d] = False
        exact = bool(result.exact[n_old + d])
        dist = int(np.bitwise_count(unsigned[n_old + d] ^ unsigned[k]))
        where = "an earlier build" if k < n_old else "this increment"
        rejects.append({
            **ids[d], "stage": "dedup", "reason": "exact_duplicate" if exact else "near_duplicate",
            "detail": ("same sha256 as " if exact else f"phash {dist} bits from ") + f"{keys[k]} (kept, {where})",
            "duplicate_of": keys[k],
        })  # fmt: skip
    return new.filter(pa.array(keep)), rejects


def plan_increment(req, layout: Layout, inc: Increment, enumerated: dict[str, Any]) -> pa.Table:
    from .build import check_weights

    if layout.exists(inc.plan):
        return layout.read_parquet(inc.plan)
    cfg = req.config
    table = _scan_table(layout, enumerated["first_chunk"], enumerated["chunks"])
    old = layout.read_parquet(inc.base(MANIFEST))
    if table is None:
        kept = pa.Table.from_pylist([], schema=SCAN_SCHEMA)
    else:
        kept = table.filter(pc.equal(table["status"], "kept"))
    kept, dup_rejects = dedup_against(old, kept, cfg.dedup)
    kept, small_rejects, _ = split_too_small(kept, cfg.buckets)  # as pipelines.build.plan
    layout.write_parquet(
        inc.dedup_rejects, pa.Table.from_pylist(dup_rejects + small_rejects, schema=REJECT_SCHEMA)
    )
    union_cols = [
        "key",
        "source",
        "quality_score",
        "score",
        *[c for c in old.column_names if c.startswith("tags_")],
    ]
    check_weights(cfg.weights, pa.concat_tables([old.select(union_cols), kept.select(union_cols)]))
    shards = layout.read_json(inc.base(SHARDS_JSON))["shards"]
    first_index: dict[tuple[int, int], int] = {}
    for entry in shards:
        bucket, number = shard_index(entry["path"])
        first_index[bucket] = max(first_index.get(bucket, 0), number + 1)
    plan = make_plan(
        kept,
        rule=cfg.buckets,
        samples_per_shard=cfg.shards.samples_per_shard,
        seed=cfg.seed,
        first_index=first_index,
    )
    layout.write_parquet(inc.plan, plan)
    return plan


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
    from .build import late_rejects, manifest_of

    old_manifest = before["manifest"]
    new_rows = manifest_of(extractors, plan, states)
    manifest = pa.concat_tables([old_manifest, new_rows.cast(old_manifest.schema)])

    scanned = _scan_table(
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


def snapshot_tables(layout: Layout, inc: Increment) -> dict[str, Any]:
    """The tables as they were when increment ``inc`` started (its snapshot), checked against the
    snapshot's own record when it has one (a damaged snapshot is named, never finalized from)."""
    from sharding.integrity import FILES, file_faults

    base_build = layout.read_json(inc.base(BUILD_JSON))
    files = {rel: e for rel, e in (base_build.get(FILES) or {}).items() if rel in SNAPSHOT}
    damaged = file_faults(_SnapshotView(layout, inc), files)
    if damaged:
        from .repair import IntegrityError

        listed = "; ".join(f"{rel}: {why}" for rel, why in damaged.items())
        raise IntegrityError(
            f"the snapshot of {layout.out} taken when increment #{inc.number} started is damaged ({listed}); "
            f"remove {layout.display(inc.dir)} and run the command again to start it afresh"
        )
    history = inc.base(REJECTS_HISTORY)
    return {
        "build": base_build,
        "manifest": layout.read_parquet(inc.base(MANIFEST)),
        "rejects": layout.read_parquet(inc.base(REJECTS)),
        "history": layout.read_parquet(history) if layout.exists(history) else None,
        "shards": read_shards(layout, layout.read_bytes(inc.base(SHARDS_JSON))),
    }


class _SnapshotView:
    """A Layout-like view whose ``path(rel)`` is the snapshot copy of ``rel`` (for ``file_faults``)."""

    def __init__(self, layout: Layout, inc: Increment) -> None:
        self._layout, self._inc = layout, inc

    def path(self, rel: str) -> str:
        return self._inc.base(rel)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layout, name)


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

    from .build import BuildSummary, count
    from .reweight import policies_of, resolve_all, summarize

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
    for name, what in versions.items():
        if what.startswith("new"):  # said even with -q: the command's [weights] did not become active
            print(f"linepairs: weights {name}: {what}", file=sys.stderr, flush=True)

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
    return BuildSummary(req.out, counts, {"total": seconds}, weights=weights)


def run_increment(req, kind: str) -> Any:
    """Run or resume one append / retry on the finished build in ``req.out``."""
    from .build import _log, check_extractors, materialize, scan
    from .planphase import PlanReader
    from .raycluster import ray_session
    from .repair import repair_finished

    layout = req.layout or Layout(req.out)
    req.out = layout.out
    build, finished = base_build(layout, kind)
    meta = check_increment(req, layout, kind, build)
    check_extractors(req)
    repaired = []
    if finished is not None:  # OUT as its last commit left it, before anything is added (pipelines/repair.py)
        repaired = repair_finished(req, layout, finished).repaired
    number = len(build.get("appends", [])) + 1
    inc = Increment(layout, number)
    if layout.exists(inc.request):
        started = layout.read_json(inc.request)
        mine = {k: meta[k] for k in ("kind", "reasons", "sources", "config")}
        if {k: started[k] for k in mine} != mine:
            from .build import BuildRefused

            changes = diff_dicts({k: started[k] for k in mine}, mine)
            raise BuildRefused(
                f"{req.out} has an unfinished {started['kind']} (#{number}) with another request "
                f"({'; '.join(changes[:4])}); run that command again to finish it first"
            )
        meta = started
    else:
        inc.remove()  # a kill before the request was recorded: nothing else in it counts
        _snapshot(layout, inc)
        meta = {**meta, "first_chunk": _records_chunks(layout), "first_seq": build["counts"]["inputs"]}
        layout.write_json(inc.request, meta)
    start = time.perf_counter()
    enumerated = enumerate_increment(req, layout, inc, meta)
    if enumerated["scanned"] == 0:
        inc.remove()
        _log(req, f"linepairs: nothing to {kind} in {req.out}")
        from .build import BuildSummary

        return BuildSummary(
            req.out, build["counts"], build["timings"], already_complete=True, weights=build.get("weights"),
            repaired=repaired,
        )  # fmt: skip
    with ray_session(req.address) as where:
        _log(req, f"linepairs: {kind} #{number} to {req.out} on {where}: {enumerated['scanned']} inputs")
        settings = increment_settings(req, layout, enumerated["first_chunk"], enumerated["chunks"])
        scan(req, layout, enumerated["chunks"], first=enumerated["first_chunk"], settings=settings)
        plan = plan_increment(req, layout, inc, enumerated)
        states = materialize(req, layout, PlanReader(layout, inc.plan))  # plan_increment wrote it
    summary = finalize_increment(
        req, layout, inc, meta, enumerated, plan, states, time.perf_counter() - start
    )
    summary.repaired = repaired
    layout.remove_temp_files()
    return summary


__all__ = ["APPEND", "RETRY", "dedup_against", "parse_reasons", "run_increment"]
