"""``linepairs build``: enumerate -> scan (Ray tasks) -> plan (driver) -> materialize (Ray) -> finalize.

Each phase is resumable; OUT's files and how they are committed: sharding/layout.py.
"""

from __future__ import annotations

import dataclasses
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
from curation.records import TAG_CATEGORIES
from curation.scan import ScanSettings, make_settings
from curation.sources import SourceError, SourceSpec, check_unique_names, iter_records
from curation.weighting import WeightError, check_sources, compute_weights, high_tier_eligible, weight_summary
from sharding.layout import Layout
from sharding.plan import make_plan, split_too_small
from sharding.schema import MANIFEST_SCHEMA, RECORD_SCHEMA, REJECT_COLUMNS, REJECT_SCHEMA

from .config import BuildConfig, ConfigError, diff_dicts
from .dedup import deduplicate
from .progress import Progress

CONTRACT_VERSION = 1


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

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to resume OUT instead of being refused."""
        return {
            "contract": CONTRACT_VERSION,
            "config": self.config.to_dict(),
            "sources": [dataclasses.asdict(s) for s in self.sources],
        }


@dataclass
class BuildSummary:
    out: str
    counts: dict[str, Any]
    timings: dict[str, float]
    already_complete: bool = False
    weights: dict[str, Any] | None = None  # curation.weighting.weight_summary

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
SCAN_SECTIONS = ("scan", "filters", "metrics", "quality", "scorers", "scoring")


def _scan_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "contract": identity["contract"],
        "config": {k: identity["config"].get(k) for k in SCAN_SECTIONS},
        "sources": [{k: v for k, v in s.items() if k != "share"} for s in identity["sources"]],
    }


def _plan_level_change(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when only settings used from the plan phase on differ."""
    return _scan_identity(old) == _scan_identity(new)


def check_request(req: BuildRequest, layout: Layout) -> BuildSummary | None:
    """Refuse a changed request; return the summary when OUT is already complete."""
    check_unique_names(req.sources)
    merge_source_shares(req)
    try:
        check_sources(req.config.weights, [s.name for s in req.sources])
    except WeightError as exc:
        raise ConfigError(str(exc)) from None
    identity = req.identity()
    if layout.exists(layout.request):
        old = layout.read_json(layout.request)
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
            changes = diff_dicts(old, identity)
            raise BuildRefused(
                f"{req.out} was built with a different request; changed: {'; '.join(changes[:8])}"
                f"{' ...' if len(changes) > 8 else ''}. Use a new --out, or delete {req.out} to rebuild."
            )
        if layout.exists(layout.build_json):
            done = layout.read_json(layout.build_json)
            damaged = damaged_shards(layout) if done.get("complete") else {}
            if damaged:
                # A finished build whose shards changed is not complete: the damaged ones are
                # rewritten from the plan (materialize checks each shard's size and sha256).
                listed = "; ".join(f"{p}: {why}" for p, why in sorted(damaged.items())[:5])
                print(
                    f"linepairs: {len(damaged)} damaged shard(s), rewriting them: {listed}", file=sys.stderr
                )
                layout.remove(layout.build_json)
            elif done.get("complete"):
                return BuildSummary(
                    req.out,
                    done["counts"],
                    done["timings"],
                    already_complete=True,
                    weights=done.get("weights"),
                )
    elif not layout.is_empty():
        raise BuildRefused(
            f"{req.out} exists, is not empty and is not a linepairs build; choose another --out"
        )
    else:
        layout.write_json(layout.request, identity)
    return None


def enumerate_records(req: BuildRequest, layout: Layout) -> int:
    """Stream every source into fixed-size records chunks; returns the chunk count."""
    if layout.exists(layout.enumerated):
        return layout.read_json(layout.enumerated)["chunks"]
    size = req.config.scan.chunk_size
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
            for rec in iter_records(spec):
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
    layout.write_json(layout.enumerated, {"chunks": chunk, "inputs": seq})
    return chunk


def scan(req: BuildRequest, layout: Layout, chunks: int) -> None:
    pending = [c for c in range(chunks) if not layout.exists(layout.scan_part(c))]
    inputs = layout.read_json(layout.enumerated)["inputs"]
    progress = Progress("scan", total=inputs, unit="inputs", enabled=req.show_progress)
    progress.update(sum(layout.parquet_rows(layout.scan_part(c)) for c in range(chunks) if c not in pending))
    if pending:
        from .distribute import map_tasks
        from .tasks import scan_chunk

        settings = scan_settings(req, layout, chunks)
        if req.config.scorers:  # decode tasks, then a Ray Data scorer actor pool (pipelines/scoring.py)
            from .scoring import scored_scan

            rows = scored_scan(layout, settings, req.config, pending)
        else:
            rows = (
                r for _, r in map_tasks(scan_chunk, pending, shared={"layout": layout, "settings": settings})
            )
        for row in rows:
            if row.get("error"):  # disk full, read-only OUT: one line, not Ray's error block
                progress.close()
                raise OSError(row["errno"], row["error"], row["filename"] or None)
            progress.update(row["rows"], kept=row["kept"])
    progress.close()


def scan_settings(req: BuildRequest, layout: Layout, chunks: int) -> ScanSettings:
    """Per-source score cuts and quantiles come from all enumerated records: the same for every task."""
    cols = ["source", "score", "fav_count"]
    parts = [layout.read_parquet(layout.records_part(c), columns=cols) for c in range(chunks)]
    records = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.float64()) for c in cols})
    cfg = req.config
    return make_settings(
        scan=cfg.scan, filters=cfg.filters, metrics=cfg.metrics, quality=cfg.quality,
        sources=records["source"].to_pylist(),
        scores=records["score"].to_numpy(zero_copy_only=False).astype(np.float64),
        favs=records["fav_count"].to_numpy(zero_copy_only=False).astype(np.float64),
    )  # fmt: skip


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A float scan column (NaN where null; all NaN when the scan has no such column)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return np.asarray([np.nan if v is None else v for v in table[name].to_pylist()], np.float64)


def read_scan(layout: Layout, chunks: int, columns: list[str] | None = None) -> pa.Table:
    parts = [layout.read_parquet(layout.scan_part(c), columns=columns) for c in range(chunks)]
    return pa.concat_tables(parts) if parts else pa.table({})


def plan(req: BuildRequest, layout: Layout, chunks: int) -> pa.Table:
    if layout.exists(layout.plan):
        return layout.read_parquet(layout.plan)
    table = read_scan(layout, chunks)
    kept = table.filter(pc.equal(table["status"], "kept"))
    cfg = req.config
    kept, dup_rejects, stats = deduplicate(kept, cfg.dedup)
    _log(
        req, f"dedup: {stats['dropped']} duplicates dropped ({stats['pairs']} pairs, route {stats['route']})"
    )
    kept, small_rejects, bucket_up = split_too_small(
        kept, cfg.buckets
    )  # before the tiers: they see the upscale
    layout.write_parquet(
        layout.dedup_rejects, pa.Table.from_pylist(dup_rejects + small_rejects, schema=REJECT_SCHEMA)
    )
    # The curation quality score when the scan has one, else the Danbooru score (NaN: unscored); an
    # image enlarged to fill its bucket holds less detail than its size says: divided by the upscale.
    quality_column = "quality_score" if "quality_score" in kept.column_names else "score"
    try:
        weighted = compute_weights(
            cfg.weights,
            sources=np.asarray(kept["source"].to_pylist(), dtype=object),
            keys=np.asarray(kept["key"].to_pylist(), dtype=object),
            quality_scores=kept[quality_column].to_numpy(zero_copy_only=False).astype(np.float64)
            / np.maximum(1.0, bucket_up),
            tags=_tags_of(kept, cfg.weights.tag_categories) if cfg.weights.tag_balance else None,
            eligible=high_tier_eligible(cfg.weights, _column(kept, "illustration"), _column(kept, "upscale")),
        )
    except WeightError as exc:
        raise ConfigError(
            f"{exc}. Fix [weights] and run the same command again: nothing is planned yet, so the scan is reused."
        ) from None
    table = make_plan(
        kept,
        rule=cfg.buckets,
        tier=weighted.tier,
        weight=weighted.weight,
        quality=weighted.quality,
        factors=weighted.factors(),
        samples_per_shard=cfg.shards.samples_per_shard,
        seed=cfg.seed,
    )
    layout.write_parquet(layout.plan, table)
    return table


def _tags_of(table: pa.Table, categories) -> list[list[str]]:
    columns = [table[f"tags_{c}"].to_pylist() for c in categories]
    return [[t for tags in row for t in (tags or [])] for row in zip(*columns)]


def _shard_done(layout: Layout, shard: str) -> dict[str, Any] | None:
    state_path = layout.shard_state(shard)
    if not layout.exists(state_path):
        return None
    state = layout.read_json(state_path)
    return state if _shard_intact(layout, state["stats"]) is None else None


def _shard_intact(layout: Layout, stats: dict[str, Any]) -> str | None:
    """What is wrong with a written shard (None: its size and sha256 are the recorded ones).

    Both: a same-size bit flip is as damaged as a truncation. Hashing every shard is cheap next
    to building it.
    """
    path = layout.shard(stats["path"])
    size = layout.size(path)
    if size is None:
        return "missing"
    if size != stats["bytes"]:
        return f"{size} bytes, {stats['bytes']} recorded"
    if layout.sha256(path) != stats["sha256"]:
        return "sha256 differs from the recorded one"
    return None


def damaged_shards(layout: Layout) -> dict[str, str]:
    """Shards of a finished build that no longer match shards.json: path -> what is wrong."""
    shards = layout.read_json(layout.shards_json)["shards"] if layout.exists(layout.shards_json) else None
    if shards is None:
        return {layout.shards_json: "missing"}
    return {s["path"]: why for s in shards if (why := _shard_intact(layout, s)) is not None}


def shard_spans(plan_table: pa.Table) -> dict[str, tuple[int, int]]:
    """(offset, length) of each shard's rows in a plan sorted by shard."""
    shards = np.asarray(plan_table["shard"].to_pylist(), dtype=object)
    if len(shards) == 0:
        return {}
    starts = np.concatenate([[0], np.flatnonzero(shards[1:] != shards[:-1]) + 1])
    ends = np.concatenate([starts[1:], [len(shards)]])
    return {str(shards[a]): (int(a), int(b - a)) for a, b in zip(starts, ends)}


def _actor_pool_shape(mat, resources: dict[str, float], shards: int) -> tuple[int, dict[str, Any], str]:
    """(actors, Ray resource options per actor, device): GPU shares when the cluster has GPUs."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = resources.get("GPU", 0)
    if gpus > 0:
        n = mat.actors or max(1, int(gpus / mat.gpu_share))
        opts, device = {"num_cpus": 1, "num_gpus": mat.gpu_share}, "cuda"
    else:
        n = mat.actors or cpus
        opts, device = {"num_cpus": 1}, "cpu"
    return max(1, min(n, cpus, shards)), opts, device


def materialize(req: BuildRequest, layout: Layout, plan_table: pa.Table) -> dict[str, dict[str, Any]]:
    """Write every missing shard on a pool of ShardMaterializer actors (extractors loaded once per actor)."""
    import ray

    from .tasks import MaterializeSettings, ShardMaterializer

    # The plan is sorted by shard: keep (start, length) per shard and turn only the shards in
    # flight into Python rows, so the driver's memory does not grow with the dataset.
    spans = shard_spans(plan_table)
    states: dict[str, dict[str, Any]] = {}
    todo = []
    for shard in sorted(spans):
        state = _shard_done(layout, shard)
        if state is None:
            todo.append(shard)
        else:
            states[shard] = state
    progress = Progress("materialize", total=plan_table.num_rows, unit="samples", enabled=req.show_progress)
    progress.update(sum(spans[s][1] for s in states))
    if todo:
        from .distribute import ActorPool

        n, opts, device = _actor_pool_shape(req.config.materialize, ray.cluster_resources(), len(todo))
        # No Ray restarts: the pool replaces a lost actor and hands its shards to the living (distribute.py).
        cls = ray.remote(ShardMaterializer).options(max_restarts=0, max_task_retries=0, **opts)
        settings = MaterializeSettings.from_config(req.config, device)

        def submit(actor, shard: str):
            # Only the shards in flight become Python rows (the plan is sorted by shard).
            return actor.materialize.remote(plan_table.slice(*spans[shard]).to_pylist())

        # one running, one queued per actor: bounded in-flight work, no idle gap between shards
        with ActorPool(lambda: cls.remote(layout, settings), n, per_actor=2) as pool:
            for shard, state in pool.map(todo, submit):
                states[shard] = state
                progress.update(spans[shard][1])
            if pool.lost:
                _log(req, f"materialize: {pool.lost} actor(s) lost; their shards were redone on the others")
    progress.close()
    return states


def finalize(
    req: BuildRequest, layout: Layout, chunks: int, plan_table: pa.Table, states: dict[str, dict[str, Any]],
    timings: dict[str, float], extractor_records: dict[str, dict[str, Any]],
    scorer_records: dict[str, dict[str, Any]] | None = None,
) -> BuildSummary:  # fmt: skip
    written = {key for s in states.values() for key in s["written"]}
    extractors = [e.name for e in req.config.extractors]
    dropped = {key: why for s in states.values() for key, why in s.get("dropped", {}).items()}
    manifest = plan_table.filter(pa.array([k in written for k in plan_table["key"].to_pylist()], pa.bool_()))
    per_category = [manifest[f"tags_{c}"].to_pylist() for c in TAG_CATEGORIES]
    all_tags = [[t for tags in row for t in (tags or [])] for row in zip(*per_category)]
    manifest = manifest.append_column("tags", pa.array(all_tags, pa.list_(pa.string())))
    stored = [[e for e in extractors if e not in dropped.get(key, {})] for key in manifest["key"].to_pylist()]
    manifest = manifest.append_column("extractors", pa.array(stored, pa.list_(pa.string())))
    manifest = manifest.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    layout.write_parquet(layout.manifest, manifest)

    scan_rejects = read_scan(layout, chunks, columns=REJECT_COLUMNS + ["status"])
    scan_rejects = scan_rejects.filter(pc.equal(scan_rejects["status"], "rejected")).select(REJECT_COLUMNS)
    late = [r for s in states.values() for r in s["rejects"]]
    dedup = layout.read_parquet(layout.dedup_rejects) if layout.exists(layout.dedup_rejects) else None
    rejects = pa.concat_tables(
        [scan_rejects.cast(REJECT_SCHEMA), *([dedup.cast(REJECT_SCHEMA)] if dedup is not None else []),
         pa.Table.from_pylist(late, schema=REJECT_SCHEMA)]
    )  # fmt: skip
    rejects = rejects.sort_by("seq")
    layout.write_parquet(layout.rejects, rejects)

    shards = sorted((s["stats"] for s in states.values()), key=lambda s: s["path"])
    layout.write_json(layout.shards_json, {"shards": shards})

    inputs = layout.read_json(layout.enumerated)["inputs"]
    counts = {
        "inputs": inputs,
        "samples": manifest.num_rows,
        "rejected": rejects.num_rows,
        "rejects_by_reason": dict(Counter(rejects["reason"].to_pylist())),
        "shards": len(shards),
        "bytes": sum(s["bytes"] for s in shards),
        "buckets": dict(
            Counter(
                f"{w}x{h}" for w, h in zip(manifest["bucket_w"].to_pylist(), manifest["bucket_h"].to_pylist())
            )
        ),
        "tiers": dict(Counter(manifest["tier"].to_pylist())),
        "drawings_dropped": dict(Counter(name for why in dropped.values() for name in why)),
    }
    if counts["samples"] + counts["rejected"] != inputs:
        raise RuntimeError(
            f"accounting error: {counts['samples']} kept + {counts['rejected']} rejected != {inputs} inputs"
        )
    weights = weight_summary(
        manifest["weight"].to_numpy(),
        sources=manifest["source"].to_pylist(),
        tiers=manifest["tier"].to_pylist(),
        buckets=[
            f"{w}x{h}" for w, h in zip(manifest["bucket_w"].to_pylist(), manifest["bucket_h"].to_pylist())
        ],
        training_samples=req.config.weights.training_samples,
    )
    build = {
        "complete": True,
        "contract": CONTRACT_VERSION,
        "request": req.identity(),
        "counts": counts,
        "weights": weights,
        "timings": timings,
        "extractors": extractor_records,
        "scorers": scorer_records or {},
        "versions": _versions(),
    }
    layout.write_json(layout.build_json, build)
    return BuildSummary(req.out, counts, timings, weights=weights)


def check_extractors(req: BuildRequest) -> dict[str, dict[str, Any]]:
    """Version, options and checkpoint sha256 of every configured extractor; ConfigError if one cannot load."""
    records = {}
    for spec in req.config.extractors:
        try:
            records[spec.name] = _extractor_record(spec)
        except (ValueError, OSError) as exc:  # lineart.weights.WeightsError is a ValueError
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
    layout.ensure_root()
    done = check_request(req, layout)
    if done is not None:
        return done
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
        t = time.perf_counter()
        scan(req, layout, chunks)
        timings["scan"] = time.perf_counter() - t
        t = time.perf_counter()
        plan_table = plan(req, layout, chunks)
        timings["plan"] = time.perf_counter() - t
        t = time.perf_counter()
        states = materialize(req, layout, plan_table)
        timings["materialize"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    summary = finalize(req, layout, chunks, plan_table, states, timings, extractor_records, scorer_records)
    layout.remove_temp_files()  # leftovers of killed local writers
    return summary


__all__ = ["BuildRefused", "BuildRequest", "BuildSummary", "run_build"]
