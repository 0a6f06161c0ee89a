"""``linepairs build``: enumerate -> scan (Ray Data) -> plan (driver) -> materialize (Ray) -> finalize.

Each phase is resumable; see pipelines/state.py for what is kept where.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import lineart
from curation.records import TAG_CATEGORIES
from curation.sources import SourceSpec, check_unique_names, iter_records
from curation.weighting import WeightError, check_sources, compute_weights, weight_summary
from sharding.plan import make_plan
from sharding.schema import MANIFEST_SCHEMA, RECORD_SCHEMA, REJECT_COLUMNS, REJECT_SCHEMA

from .config import BuildConfig, ConfigError, diff_dicts
from .progress import Progress
from .state import Layout, read_json, write_json, write_parquet

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

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to resume OUT instead of being refused."""
        return {
            "contract": CONTRACT_VERSION,
            "config": self.config.to_dict(),
            "sources": [
                {"name": s.name, "kind": s.kind, "path": s.path, "images": s.images} for s in self.sources
            ],
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


def check_request(req: BuildRequest, layout: Layout) -> BuildSummary | None:
    """Refuse a changed request; return the summary when OUT is already complete."""
    check_unique_names(req.sources)
    try:
        check_sources(req.config.weights, [s.name for s in req.sources])
    except WeightError as exc:
        raise ConfigError(str(exc)) from None
    identity = req.identity()
    if os.path.exists(layout.request):
        old = read_json(layout.request)
        if old != identity:
            changes = diff_dicts(old, identity)
            raise BuildRefused(
                f"{req.out} was built with a different request; changed: {'; '.join(changes[:8])}"
                f"{' ...' if len(changes) > 8 else ''}. Use a new --out, or delete {req.out} to rebuild."
            )
        if os.path.exists(layout.build_json):
            done = read_json(layout.build_json)
            if done.get("complete"):
                return BuildSummary(
                    req.out,
                    done["counts"],
                    done["timings"],
                    already_complete=True,
                    weights=done.get("weights"),
                )
    elif os.path.isdir(req.out) and os.listdir(req.out):
        raise BuildRefused(
            f"{req.out} exists, is not empty and is not a linepairs build; choose another --out"
        )
    else:
        write_json(layout.request, identity)
    return None


def enumerate_records(req: BuildRequest, layout: Layout) -> int:
    """Stream every source into fixed-size records chunks; returns the chunk count."""
    if os.path.exists(layout.enumerated):
        return read_json(layout.enumerated)["chunks"]
    size = req.config.scan.chunk_size
    chunk, rows, seq = 0, [], 0
    progress = Progress("enumerate", total=None, unit="inputs", enabled=req.show_progress)

    def flush():
        nonlocal chunk, rows
        path = layout.records_part(chunk)
        if not os.path.exists(path):  # a re-enumeration after a crash yields the same chunks
            write_parquet(path, pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
        chunk, rows = chunk + 1, []

    for spec in req.sources:
        for rec in iter_records(spec):
            row = rec.to_row()
            row["seq"] = seq
            seq += 1
            rows.append(row)
            progress.update(1)
            if len(rows) == size:
                flush()
    if rows:
        flush()
    progress.close()
    write_json(layout.enumerated, {"chunks": chunk, "inputs": seq})
    return chunk


def scan(req: BuildRequest, layout: Layout, chunks: int) -> None:
    pending = [c for c in range(chunks) if not os.path.exists(layout.scan_part(c))]
    inputs = read_json(layout.enumerated)["inputs"]
    progress = Progress("scan", total=inputs, unit="inputs", enabled=req.show_progress)
    progress.update(
        sum(pq.read_metadata(layout.scan_part(c)).num_rows for c in range(chunks) if c not in pending)
    )
    if pending:
        import ray.data

        from .raycluster import quiet_ray_data
        from .tasks import scan_chunk

        quiet_ray_data()
        ds = ray.data.from_items([{"chunk": c} for c in pending], override_num_blocks=len(pending))
        ds = ds.map(
            scan_chunk,
            fn_kwargs={"out": req.out, "scan_cfg": req.config.to_dict()["scan"]},
            num_cpus=1,
        )
        for row in ds.iter_rows():
            progress.update(row["rows"], kept=row["kept"])
    progress.close()


def read_scan(layout: Layout, chunks: int, columns: list[str] | None = None) -> pa.Table:
    parts = [pq.read_table(layout.scan_part(c), columns=columns) for c in range(chunks)]
    return pa.concat_tables(parts) if parts else pa.table({})


def plan(req: BuildRequest, layout: Layout, chunks: int) -> pa.Table:
    if os.path.exists(layout.plan):
        return pq.read_table(layout.plan)
    table = read_scan(layout, chunks)
    kept = table.filter(pc.equal(table["status"], "kept"))
    cfg = req.config
    # The curation quality score when the scan has one, else the Danbooru score (NaN: unscored).
    quality_column = "quality_score" if "quality_score" in kept.column_names else "score"
    try:
        weighted = compute_weights(
            cfg.weights,
            sources=np.asarray(kept["source"].to_pylist(), dtype=object),
            keys=np.asarray(kept["key"].to_pylist(), dtype=object),
            quality_scores=kept[quality_column].to_numpy(zero_copy_only=False).astype(np.float64),
            tags=_tags_of(kept, cfg.weights.tag_categories) if cfg.weights.tag_balance else None,
        )
    except WeightError as exc:
        raise ConfigError(f"{exc}. Fix [weights] and build into a new --out.") from None
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
    write_parquet(layout.plan, table)
    return table


def _tags_of(table: pa.Table, categories) -> list[list[str]]:
    columns = [table[f"tags_{c}"].to_pylist() for c in categories]
    return [[t for tags in row for t in (tags or [])] for row in zip(*columns)]


def _shard_done(layout: Layout, shard: str) -> dict[str, Any] | None:
    state_path = layout.shard_state(shard)
    if not os.path.exists(state_path):
        return None
    state = read_json(state_path)
    tar = layout.path(shard)
    if not os.path.exists(tar) or os.path.getsize(tar) != state["stats"]["bytes"]:
        return None
    return state


def shard_spans(plan_table: pa.Table) -> dict[str, tuple[int, int]]:
    """(offset, length) of each shard's rows in a plan sorted by shard."""
    shards = np.asarray(plan_table["shard"].to_pylist(), dtype=object)
    if len(shards) == 0:
        return {}
    starts = np.concatenate([[0], np.flatnonzero(shards[1:] != shards[:-1]) + 1])
    ends = np.concatenate([starts[1:], [len(shards)]])
    return {str(shards[a]): (int(a), int(b - a)) for a, b in zip(starts, ends)}


def materialize(req: BuildRequest, layout: Layout, plan_table: pa.Table) -> dict[str, dict[str, Any]]:
    import ray

    from .tasks import materialize_task

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
    specs = req.config.to_dict()["extractors"]
    shard_cfg = req.config.to_dict()["shards"]
    remote = ray.remote(materialize_task).options(num_cpus=1, max_retries=2)
    window = max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)  # bounded in-flight tasks
    in_flight: dict[Any, str] = {}
    queue = list(todo)
    while queue or in_flight:
        while queue and len(in_flight) < window:
            shard = queue.pop(0)
            rows = plan_table.slice(*spans[shard]).to_pylist()
            ref = remote.remote(req.out, rows, specs, shard_cfg, req.config.scan.max_pixels)
            in_flight[ref] = shard
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            shard = in_flight.pop(ref)
            states[shard] = ray.get(ref)
            progress.update(spans[shard][1])
    progress.close()
    return states


def finalize(
    req: BuildRequest, layout: Layout, chunks: int, plan_table: pa.Table, states: dict[str, dict[str, Any]],
    timings: dict[str, float],
) -> BuildSummary:  # fmt: skip
    written = {key for s in states.values() for key in s["written"]}
    extractors = [e.name for e in req.config.extractors]
    manifest = plan_table.filter(pa.array([k in written for k in plan_table["key"].to_pylist()], pa.bool_()))
    per_category = [manifest[f"tags_{c}"].to_pylist() for c in TAG_CATEGORIES]
    all_tags = [[t for tags in row for t in (tags or [])] for row in zip(*per_category)]
    manifest = manifest.append_column("tags", pa.array(all_tags, pa.list_(pa.string())))
    manifest = manifest.append_column(
        "extractors", pa.array([extractors] * manifest.num_rows, pa.list_(pa.string()))
    )
    manifest = manifest.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    write_parquet(layout.manifest, manifest)

    scan_rejects = read_scan(layout, chunks, columns=REJECT_COLUMNS + ["status"])
    scan_rejects = scan_rejects.filter(pc.equal(scan_rejects["status"], "rejected")).select(REJECT_COLUMNS)
    late = [r for s in states.values() for r in s["rejects"]]
    rejects = pa.concat_tables(
        [scan_rejects.cast(REJECT_SCHEMA), pa.Table.from_pylist(late, schema=REJECT_SCHEMA)]
    )
    rejects = rejects.sort_by("seq")
    write_parquet(layout.rejects, rejects)

    shards = sorted((s["stats"] for s in states.values()), key=lambda s: s["path"])
    write_json(layout.shards_json, {"shards": shards})

    inputs = read_json(layout.enumerated)["inputs"]
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
        "extractors": {e.name: _extractor_record(e) for e in req.config.extractors},
        "versions": _versions(),
    }
    write_json(layout.build_json, build)
    return BuildSummary(req.out, counts, timings, weights=weights)


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
    for dist in ("linepairs", "numpy", "opencv-python-headless", "pillow", "pyarrow", "ray", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_build(req: BuildRequest) -> BuildSummary:
    """Run or resume a build; safe to call again after a crash at any point."""
    from .raycluster import ray_session

    req.out = os.path.abspath(req.out)
    layout = Layout(req.out)
    os.makedirs(req.out, exist_ok=True)
    done = check_request(req, layout)
    if done is not None:
        return done
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
    summary = finalize(req, layout, chunks, plan_table, states, timings)
    for tmp in glob.glob(layout.path("**", "*.tmp-*"), recursive=True):  # leftovers of killed writers
        os.remove(tmp)
    return summary


__all__ = ["BuildRefused", "BuildRequest", "BuildSummary", "run_build"]
