"""``linepairs build``: enumerate -> scan (Ray tasks) -> plan (driver) -> materialize (Ray) -> finalize.

Each phase is resumable; OUT's files and how they are committed: sharding/layout.py.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import lineart
from curation.scan import ScanSettings, make_settings
from curation.sources import SourceError, SourceSpec, check_metadata, check_unique_names, iter_records
from curation.storage import SourceStorage
from curation.weighting import WeightConfig, WeightError, check_sources
from groundwork.configtable import diff_dicts
from groundwork.contract import CONTRACT_VERSION
from sharding.integrity import FILES, commit, record_files
from sharding.layout import DamagedFileError, Layout
from sharding.schema import RECORD_SCHEMA, REJECT_SCHEMA
from sharding.weights import FIRST_VERSION

from .columnar import bucket_labels, labels
from .config import BuildConfig, ConfigError
from .finalize import manifest_rows, write_dataset_card, write_manifest, write_rejects
from .phasetimes import PhaseTrace
from .planphase import PlanReader, PlanSettings, write_plan
from .progress import Progress
from .repair import Finished, finished_build, repair_finished
from .reweight import manifest_inputs, policy_meta, solve, write_first_version
from .shardcheck import intact_states


class BuildRefused(Exception):
    """The request conflicts with what OUT already holds; the message says what differs."""


@dataclass
class BuildRequest:
    sources: list[SourceSpec]
    out: str
    config: BuildConfig = field(default_factory=BuildConfig)
    address: str | None = None
    show_progress: bool = True
    # OUT opened with its storage options (None: opened from ``out``); never part of the identity,
    # so credentials given as options are not written into OUT.
    layout: Layout | None = field(default=None, repr=False)
    append: bool = False  # add the inputs not yet seen to the finished build (pipelines/increment.py)
    retry: tuple[str, ...] = ()  # re-scan the rejects of these reasons ("all": every reject)
    # The filesystems of URL sources (curation.storage); like ``layout``, never part of the identity.
    storage: SourceStorage | None = field(default=None, repr=False)
    # per-unit timestamps for the build bench (pipelines/phasetimes.py); never part of the identity
    trace: PhaseTrace | None = field(default=None, repr=False)

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to resume OUT instead of being refused."""
        return {
            "contract": CONTRACT_VERSION,
            "config": self.config.to_dict(),
            # through JSON, as request.json holds it (tuples become lists)
            "sources": json.loads(json.dumps([dataclasses.asdict(s) for s in self.sources])),
        }


@dataclass
class BuildSummary:
    out: str
    counts: dict[str, Any]
    timings: dict[str, float]
    already_complete: bool = False
    weights: dict[str, Any] | None = None  # curation.weighting.weight_summary
    repaired: list[str] = field(default_factory=list)  # files a re-run rebuilt (pipelines/repair.py)

    def lines(self) -> list[str]:
        c = self.counts
        lines = [
            f"inputs      {c['inputs']}",
            f"kept        {c['samples']} samples in {c['shards']} shards ({_human(c['bytes'])})",
            f"rejected    {c['rejected']}",
        ]
        for reason, n in sorted(c["rejects_by_reason"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason:<22}{n}")
        lines += _weight_lines(self.weights)
        total = self.timings.get("total", 0.0)
        if total and not self.already_complete:
            lines.append(f"throughput  {c['samples'] / total:.2f} samples/s over {total:.1f} s")
        lines.append(f"output      {self.out}")
        lines.append(f"next        linepairs verify {self.out}")
        return lines


def _weight_lines(w: dict[str, Any] | None) -> list[str]:
    if not w or not w.get("samples"):
        return []
    share = w["intended_share"]
    fmt = lambda d: ", ".join(f"{k} {v:.1%}" for k, v in d.items())  # noqa: E731
    draws = w["expected_draws"]
    return [
        f"draws       by source: {fmt(share['source'])}; by tier: {fmt(share['tier'])}",
        f"weights     effective sample size {w['effective_sample_size']:.0f} of {w['samples']}; "
        f"expected draws per sample in {draws['training_samples']} (median {draws['median']:.2f}, max {draws['max']:.2f})",
    ]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _log(req: BuildRequest, msg: str) -> None:
    if req.show_progress:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- phases


def merge_source_shares(req: BuildRequest) -> None:
    """``share`` on a source and ``[weights.shares]`` are two spellings of one fact: merge, refuse conflicts."""
    given = {s.name: s.share for s in req.sources if s.share is not None}
    if not given:
        return
    shares = dict(req.config.weights.shares)
    clash = sorted(n for n, v in given.items() if n in shares and shares[n] != v)
    if clash:
        raise ConfigError(
            f"source {clash[0]!r} has share {given[clash[0]]:g} on the source but "
            f"{shares[clash[0]]:g} in [weights.shares]; give it once"
        )
    weights = dataclasses.replace(req.config.weights, shares={**shares, **given})
    try:
        weights.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    req.config = dataclasses.replace(req.config, weights=weights)


# Config sections read by the enumeration and the scan; every other section is used from the plan on.
SCAN_SECTIONS = ("scan", "filters", "metrics", "quality", "scorers", "scoring", "sidecars")


def _scan_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "contract": identity["contract"],
        "config": {k: identity["config"].get(k) for k in SCAN_SECTIONS},
        "sources": [{k: v for k, v in s.items() if k != "share"} for s in identity["sources"]],
    }


def _plan_level_change(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when only settings used from the plan phase on differ."""
    return _scan_identity(old) == _scan_identity(new)


def check_request(req: BuildRequest, layout: Layout) -> Finished | None:
    """Refuse a changed request; return the last commit (pipelines/repair.py) when OUT is finished."""
    check_unique_names(req.sources)
    merge_source_shares(req)
    try:
        check_sources(req.config.weights, [s.name for s in req.sources])
    except WeightError as exc:
        raise ConfigError(str(exc)) from None
    identity = req.identity()
    finished = finished_build(layout)
    if finished is not None:
        old = finished.record["request"]
        if old != identity:
            refuse_changed_request(req, layout, old, identity)  # returns only for a stored weight policy
        return finished
    if layout.exists(layout.request):
        old = read_request(layout)
        if old != identity and _plan_level_change(old, identity) and not layout.exists(layout.plan):
            # Nothing downstream of the scan exists yet (e.g. the plan refused the weights):
            # a change to the plan's settings costs nothing, so take it instead of refusing.
            changes = diff_dicts(old, identity)
            _log(
                req,
                f"linepairs: {req.out} is not planned yet; taking the changed settings: {'; '.join(changes[:4])}",
            )
            layout.write_json(layout.request, identity)
        elif old != identity:
            refuse_changed_request(req, layout, old, identity)
    elif not layout.is_empty():
        raise BuildRefused(
            f"{req.out} exists, is not empty and is not a linepairs build; choose another --out"
        )
    else:
        layout.write_json(layout.request, identity)
    return None


def read_request(layout: Layout) -> dict[str, Any]:
    """``_state/request.json`` of an unfinished build; one line when it is damaged (nothing committed
    says what the request was, so it cannot be restored)."""
    try:
        return layout.read_json(layout.request)
    except DamagedFileError as exc:
        raise BuildRefused(
            f"{exc}; the build is unfinished, so its request cannot be recovered: delete {layout.out} "
            "and build again"
        ) from None


RECORDS_PART = 4096  # inputs per records part (private) and the largest scan part


def scan_unit(inputs: int, chunk_size: int) -> int:
    """Inputs per scan task and scan part: ``scan.chunk_size``, or with 0 a power of two from 32 to
    RECORDS_PART giving ~64 tasks, so a small build still spreads over every core and a large one
    writes parts of thousands of rows (resume loses at most the parts in flight)."""
    if chunk_size:
        return chunk_size
    unit = 32
    while unit * 2 <= min(RECORDS_PART, inputs // 64):
        unit *= 2
    return unit


def _without_weights(identity: dict[str, Any], sources: bool = False) -> dict[str, Any]:
    config = {k: v for k, v in identity["config"].items() if k != "weights"}
    kept = [] if sources else [{k: v for k, v in s.items() if k != "share"} for s in identity["sources"]]
    return {"contract": identity["contract"], "config": config, "sources": kept}


def refuse_changed_request(
    req: BuildRequest, layout: Layout, old: dict[str, Any], new: dict[str, Any]
) -> None:
    """Raise BuildRefused naming what changed and the command that would do it.

    Returns (accepts the request) only when just the weights changed and OUT already holds a
    weight version of exactly that policy.
    """
    changes = diff_dicts(old, new)
    shown = f"{'; '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}"
    finished = finished_build(layout) is not None
    if finished and _without_weights(old) == _without_weights(new):
        from .reweight import stored_policies

        if req.config.weights in stored_policies(layout).values():
            return
        raise BuildRefused(
            f"{req.out} is finished and only its weights changed ({shown}); weights change without "
            f"rewriting a shard: `linepairs reweight {req.out} --config FILE --activate`"
        )
    if finished and _without_weights(old, sources=True) == _without_weights(new, sources=True):
        raise BuildRefused(
            f"{req.out} is finished and the sources changed ({shown}); add new inputs with "
            f"`linepairs build SOURCE... --out {req.out} --append`"
        )
    raise BuildRefused(
        f"{req.out} was built with a different request; changed: {shown}. That changes the shards: "
        f"use a new --out, or delete {req.out} to rebuild."
    )


def predicts_tags(config: BuildConfig) -> bool:
    """A tagger fills tags and ratings for records without them ([scorers.wd_tagger])."""
    return any(s.name == "wd_tagger" for s in config.scorers)


def enumerate_records(req: BuildRequest, layout: Layout) -> int:
    """Stream every source into records parts; returns the number of scan units (scan parts).

    Done when ``_state/enumerated.json`` exists and so does every records part it counts: a part
    deleted (it was damaged) is written again by enumerating again (the others are kept)."""
    if layout.exists(layout.enumerated):
        done = layout.read_json(layout.enumerated)
        listed = layout.listed_sizes(layout.records_dir)
        if all(layout.records_part(c) in listed for c in range(done.get("records_parts", done["chunks"]))):
            return done["chunks"]
    check_metadata(req.sources, req.config.filters, predicts_tags(req.config), req.storage)
    size = req.config.scan.chunk_size or RECORDS_PART
    chunk, rows, seq = 0, [], 0
    progress = Progress("enumerate", total=None, unit="inputs", enabled=req.show_progress)

    def flush():
        nonlocal chunk, rows
        path = layout.records_part(chunk)
        if not layout.exists(path):  # a re-enumeration after a crash yields the same chunks
            layout.write_parquet(path, pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
        chunk, rows = chunk + 1, []

    try:
        for spec in req.sources:
            before = seq
            for rec in iter_records(spec, req.storage):
                row = rec.to_row()
                row["seq"] = seq
                seq += 1
                rows.append(row)
                progress.update(1)
                if len(rows) == size:
                    flush()
            if seq == before:  # an ordinary mistake (wrong or empty folder), not an empty build
                raise SourceError(f"source {spec.describe()} holds no images or posts")
        if rows:
            flush()
    finally:
        progress.close()
    unit = scan_unit(seq, req.config.scan.chunk_size)
    units = -(-seq // unit)
    layout.write_json(
        layout.enumerated,
        {"chunks": units, "inputs": seq, "records_parts": chunk, "records_rows": size, "unit": unit},
    )
    return units


def _units(layout: Layout) -> tuple[int, int, int]:
    """(records parts, rows per records part, inputs per scan unit) of an enumerated build."""
    e = layout.read_json(layout.enumerated)
    return e.get("records_parts", e["chunks"]), e.get("records_rows", 0), e.get("unit", 0)


def scan(
    req: BuildRequest, layout: Layout, chunks: int, *, first: int = 0, settings: ScanSettings | None = None
) -> None:
    """Scan records chunks ``first`` .. ``chunks - 1`` that have no scan part yet (an append scans
    only its own chunks, with the ``settings`` of ``pipelines.increment``)."""
    pending = [c for c in range(first, chunks) if not layout.exists(layout.scan_part(c))]
    if first == 0:
        inputs = layout.read_json(layout.enumerated)["inputs"]
    else:
        inputs = sum(layout.parquet_rows(layout.records_part(c)) for c in range(first, chunks))
    progress = Progress("scan", total=inputs, unit="inputs", enabled=req.show_progress)
    progress.update(
        sum(layout.parquet_rows(layout.scan_part(c)) for c in range(first, chunks) if c not in pending)
    )
    if pending:
        from .distribute import map_tasks
        from .tasks import scan_chunk

        # A build's scan units may slice its records parts; an increment's chunks are its records parts.
        _, records_rows, unit = _units(layout) if first == 0 else (0, 0, 0)
        settings = settings or scan_settings(req, layout, chunks)
        if req.config.scorers:  # decode tasks, then a Ray Data scorer actor pool (pipelines/scoring.py)
            from .scoring import scored_scan

            rows = scored_scan(layout, settings, req.config, pending, unit, records_rows)
        else:
            shared = {"layout": layout, "settings": settings, "unit": unit, "records_rows": records_rows}
            rows = (r for _, r in map_tasks(scan_chunk, pending, shared=shared))
        for row in rows:
            if row.get("error"):  # disk full, read-only OUT: one line, not Ray's error block
                progress.close()
                raise OSError(row["errno"], row["error"], row["filename"] or None)
            if req.trace is not None:
                req.trace.unit("scan", row.get("timing"))
            progress.update(row["rows"], kept=row["kept"])
    progress.close()


def scan_settings(req: BuildRequest, layout: Layout, chunks: int) -> ScanSettings:
    """Per-source score cuts and quantiles come from all enumerated records: the same for every task."""
    cols = ["source", "score", "fav_count"]
    parts = [layout.read_parquet(layout.records_part(r), columns=cols) for r in range(_units(layout)[0])]
    records = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.float64()) for c in cols})
    return settings_from_records(req.config, records, req.storage)


def settings_from_records(
    cfg: BuildConfig, records: pa.Table, storage: SourceStorage | None = None
) -> ScanSettings:
    """The scan settings of ``cfg`` with the quantile tables of these records (source, score, fav_count)."""
    settings = make_settings(
        scan=cfg.scan, filters=cfg.filters, metrics=cfg.metrics, quality=cfg.quality,
        sources=labels(records["source"]),  # one Python string per source, not per record
        scores=records["score"].to_numpy(zero_copy_only=False).astype(np.float64),
        favs=records["fav_count"].to_numpy(zero_copy_only=False).astype(np.float64),
    )  # fmt: skip
    return dataclasses.replace(settings, storage=storage)


def plan(req: BuildRequest, layout: Layout, chunks: int) -> PlanReader:
    """Dedup, bucket fit, a feasibility check of the weights and the shard plan
    (pipelines/planphase.py); streamed, so memory is per part."""
    if not layout.exists(layout.plan) or not layout.exists(layout.early_rejects):  # (written first)
        cfg = req.config
        settings = PlanSettings(cfg.dedup, cfg.weights, cfg.buckets, cfg.shards.samples_per_shard, cfg.seed)
        write_plan(
            layout, chunks, settings, log=lambda msg: _log(req, msg),
            check_weights=lambda planned: check_weights(cfg.weights, planned),
        )  # fmt: skip
    return PlanReader(layout, layout.plan)


def check_weights(cfg: WeightConfig, kept: pa.Table) -> None:
    """Refuse a policy these samples cannot meet before anything is planned (the weights proper are
    solved at finalize, over the samples actually written)."""
    try:
        solve(kept, cfg)
    except WeightError as exc:
        raise ConfigError(
            f"{exc}. Fix [weights] and run the same command again: nothing is planned yet, so the scan is reused."
        ) from None


def _small_state(state: dict[str, Any]) -> dict[str, Any]:
    """What the driver keeps of a shard's state: not the written keys (the plan minus the late
    rejects gives them), so its memory grows with shards and rejects, not with samples."""
    return {k: v for k, v in state.items() if k not in ("written", "timing")}


def materialize(req: BuildRequest, layout: Layout, plan: PlanReader) -> dict[str, dict[str, Any]]:
    """Write every missing shard on a pool of ShardMaterializer actors (extractors loaded once per actor)."""
    # The plan is read shard by shard (PlanReader): only the shards in flight become Python rows.
    spans = plan.spans
    # a shard is done when its state is there and its tar has the recorded size and sha256
    states = {shard: _small_state(st) for shard, st in intact_states(layout, sorted(spans)).items()}
    todo = [shard for shard in sorted(spans) if shard not in states]
    progress = Progress("materialize", total=plan.num_rows, unit="samples", enabled=req.show_progress)
    progress.update(sum(spans[s][1] for s in states))
    states.update(write_shards(req, layout, plan, todo, progress))
    progress.close()
    return states


def write_shards(
    req: BuildRequest, layout: Layout, plan: PlanReader, todo: list[str], progress: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """Write the shards ``todo`` of ``plan`` (each tar, then its state marker) on an actor pool in
    the Ray session of the caller; returns their small states. Also the repair's way to rewrite a
    damaged shard (pipelines/repair.py): the same rows give the same bytes."""
    if not todo:
        return {}
    from .distribute import actor_pool, pool_shape
    from .tasks import MaterializeSettings, ShardMaterializer

    states: dict[str, dict[str, Any]] = {}
    spans = plan.spans
    # Largest shards first (shards are grouped by bucket, so their sizes differ): the phase ends
    # with small ones and no core waits long on the last big shard (docs/scale.md). Bytes per shard
    # do not depend on the order.
    todo = sorted(todo, key=lambda shard: (-spans[shard][1], shard))
    shape = pool_shape(req.config.materialize, len(todo))
    settings = MaterializeSettings.from_config(req.config, shape.device, req.storage)
    # one running, one queued per actor: bounded in-flight work, no idle gap between shards; only the
    # shards in flight become Python rows (PlanReader reads their row groups)
    with actor_pool(ShardMaterializer, (layout, settings), shape, per_actor=2) as pool:
        for shard, state in pool.map(todo, "materialize", lambda shard: (plan.rows(shard),)):
            if req.trace is not None:
                req.trace.unit("materialize", state.get("timing"))
            states[shard] = _small_state(state)
            if progress is not None:
                progress.update(spans[shard][1])
        if pool.lost:
            _log(req, f"materialize: {pool.lost} actor(s) lost; their shards were redone on the others")
    return states


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
        from .repair import IntegrityError

        raise IntegrityError(
            f"accounting error: {counts['samples']} kept + {counts['rejected']} rejected != {inputs} inputs; "
            "OUT's tables disagree with its records (`linepairs verify OUT` names the files)"
        )
    return counts


def check_extractors(req: BuildRequest) -> dict[str, dict[str, Any]]:
    """Version, options and checkpoint sha256 of every configured extractor; ConfigError if one cannot load."""
    records = {}
    for spec in req.config.extractors:
        try:
            records[spec.name] = _extractor_record(spec)
        except (ValueError, OSError) as exc:  # groundwork.checkpoints.WeightsError is a ValueError
            raise ConfigError(f"extractor {spec.name!r}: {exc}") from None
    return records


def _extractor_record(spec) -> dict[str, Any]:
    ext = lineart.create(spec.name, weights=spec.weights, **spec.options)
    return {
        "version": getattr(ext, "version", "?"),
        "options": spec.options,
        "weights": spec.weights,
        "weights_sha256": getattr(ext, "weights_sha256", None),
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("linepairs", "numpy", "opencv-python-headless", "pillow", "pyarrow", "ray", "torch", "timm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_build(req: BuildRequest) -> BuildSummary:
    """Run or resume a build; safe to call again after a crash at any point."""
    from .raycluster import ray_session

    layout = req.layout or Layout(req.out)
    req.out = layout.out  # absolute for a local OUT, the URL otherwise
    if req.append and req.retry:
        raise BuildRefused("--append and --retry are two runs: give one, then the other")
    if (req.append or req.retry) and layout.exists(layout.request):
        from .increment import APPEND, RETRY, run_increment

        check_unique_names(req.sources)
        return run_increment(req, APPEND if req.append else RETRY)
    if req.retry:
        raise BuildRefused(f"--retry needs a finished build in {req.out}")
    layout.ensure_root()  # --append to an empty OUT is a plain build
    finished = check_request(req, layout)
    if finished is not None:  # a re-run: check OUT against its last commit, repair what changed
        return repair_finished(req, layout, finished)
    # Build every extractor once here: missing or wrong weights are one clear error before any
    # work starts, and the checkpoint hashes go into build.json.
    extractor_records = check_extractors(req)
    from .scoring import check_scorers

    scorer_records = check_scorers(req.config)  # the same for the learned scorers
    timings: dict[str, float] = {}
    start = time.perf_counter()
    t = time.perf_counter()
    chunks = enumerate_records(req, layout)
    timings["enumerate"] = time.perf_counter() - t
    with ray_session(req.address) as where:
        _log(req, f"linepairs: building {req.out} on {where}")
        trace = req.trace or PhaseTrace()
        t = time.perf_counter()
        with trace.phase("scan"):
            scan(req, layout, chunks)
        timings["scan"] = time.perf_counter() - t
        t = time.perf_counter()
        with trace.phase("plan"):
            planned = plan(req, layout, chunks)
        timings["plan"] = time.perf_counter() - t
        t = time.perf_counter()
        with trace.phase("materialize"):
            states = materialize(req, layout, planned)
        timings["materialize"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = finalize(req, layout, chunks, planned, states, timings, extractor_records, scorer_records)
    layout.remove_temp_files()  # leftovers of killed local writers
    return summary


__all__ = ["BuildRefused", "BuildRequest", "BuildSummary", "run_build"]
