"""``linepairs build``: enumerate -> scan (Ray tasks) -> plan (driver) -> materialize (Ray) -> finalize,
one module per phase in this package. Each phase is resumable; OUT's files and how they are committed:
sharding/layout.py.

``build --append`` and ``build --retry``: grow or repair a finished build without touching its shards.

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

import time
from contextlib import nullcontext
from typing import Any

import lineart
from curation.sources import SourceError, check_metadata, check_unique_names
from groundwork.configtable import diff_dicts
from sharding.layout import Layout

from ..config import ConfigError
from ..phasetimes import PhaseTrace
from .base import (
    Base,
    Increment,
    base_build,
    check_increment,
    check_policy_sources,
    check_request,
    first_free_chunk,
    take_snapshot,
)  # fmt: skip
from .enumerate import enumerate_inputs, predicts_tags
from .finalize import finalize
from .materialize import early_materializers, materialize, scan_tail
from .plan import plan
from .repair import repair_finished
from .request import APPEND, FRESH, RETRY, BuildRefused, BuildRequest, BuildSummary, log
from .scan import scan

# ---------------------------------------------------------------- phases


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


def run_build(req: BuildRequest) -> BuildSummary:
    """Run or resume a build, an append or a retry; safe to call again after a crash at any point.

    One sequence for all three: the base (empty for a fresh build, the finished build's snapshot for
    an increment) and what it selects (every input, the unseen ones, the rejects) are opened and
    every check that can refuse runs; then enumerate, scan, plan, materialize and finalize, each
    taking the base."""
    from ..raycluster import ray_session

    layout = req.layout or Layout(req.out)
    req.out = layout.out  # absolute for a local OUT, the URL otherwise
    if req.append and req.retry:
        raise BuildRefused("--append and --retry are two runs: give one, then the other")
    opened = _open_base(req, layout)
    if isinstance(opened, BuildSummary):  # a re-run of a finished build: checked and repaired
        return opened
    base, extractor_records, scorer_records, repaired = opened
    timings: dict[str, float] = {}
    start = time.perf_counter()
    t = time.perf_counter()
    try:
        work = enumerate_inputs(req, layout, base)
    except SourceError:
        base.refused(layout)
        raise
    timings["enumerate"] = time.perf_counter() - t
    if work["scanned"] == 0 and base.build is not None:
        base.inc.remove()
        log(req, f"linepairs: nothing to {base.kind} in {req.out}")
        build = base.build
        return BuildSummary(
            req.out, build["counts"], build["timings"], already_complete=True, weights=build.get("weights"),
            repaired=repaired,
        )  # fmt: skip
    with ray_session(req.address) as where:
        log(req, base.describe(req.out, where, work["scanned"]))
        trace = req.trace or PhaseTrace()
        # actors (if the shards need them) start in the scan's tail and the plan; None: shard tasks
        with early_materializers(req, layout) or nullcontext() as pool:
            t = time.perf_counter()
            with trace.phase("scan"):
                scan(req, layout, base, work, on_free=scan_tail(req, pool))
            timings["scan"] = time.perf_counter() - t
            if pool is not None:
                pool.start(every_cpu=no_tasks_before_materialize(req, layout, base, work))
            t = time.perf_counter()
            with trace.phase("plan"):
                try:
                    planned = plan(req, layout, base, work)
                except ConfigError:
                    base.refused(layout)
                    raise
            timings["plan"] = time.perf_counter() - t
            t = time.perf_counter()
            with trace.phase("materialize"):
                states = materialize(req, layout, planned, pool)
            timings["materialize"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - start
        # Written before Ray is left: finalize needs no Ray, and a fault in Ray's own teardown (the
        # driver's disconnect) must not leave a build whose work is done without its manifest.
        summary = finalize(req, layout, base, work, states, timings, extractor_records, scorer_records)
    summary.repaired = repaired
    layout.remove_temp_files()  # leftovers of killed local writers
    return summary


def no_tasks_before_materialize(req: BuildRequest, layout: Layout, base: Base, work: dict[str, Any]) -> bool:
    """Whether the driver runs no Ray task between the scan and the shards, so every materialize
    actor may start while the plan runs: a fresh build with no shard written (a resume hashes its
    written shards on Ray tasks: pipelines/shardcheck.py) and fewer inputs than the dedup's Ray
    threshold (the inputs bound the kept samples the search takes: pipelines/dedup.py)."""
    from ..dedup import searches_on_ray

    return (
        base.empty
        and not searches_on_ray(work["inputs"], req.config.dedup)
        and not layout.listed_sizes(layout.shard_states_dir)
    )


def _open_base(req: BuildRequest, layout: Layout) -> BuildSummary | tuple[Base, dict, dict, list[str]]:
    """The base this request grows from, after every check that can refuse it (before its first
    byte): (base, extractor records, scorer records, files repaired), or the summary of a re-run."""
    from ..scoring import check_scorers

    if (req.append or req.retry) and layout.exists(layout.request):
        check_unique_names(req.sources)
        return _open_increment(req, layout, APPEND if req.append else RETRY)
    if req.retry:
        raise BuildRefused(f"--retry needs a finished build in {req.out}")
    layout.ensure_root()  # --append to an empty OUT is a plain build
    finished = check_request(req, layout)
    if finished is not None:  # a re-run: check OUT against its last commit, repair what changed
        return repair_finished(req, layout, finished)
    # Build every extractor once here: missing or wrong weights are one clear error before any
    # work starts, and the checkpoint hashes go into build.json.
    extractor_records = check_extractors(req)
    scorer_records = check_scorers(req.config)  # the same for the learned scorers
    return Base(FRESH), extractor_records, scorer_records, []


def _open_increment(req: BuildRequest, layout: Layout, kind: str) -> tuple[Base, dict, dict, list[str]]:
    """An append or retry onto the finished build in ``req.out``: checked, OUT repaired to its last
    commit, the snapshot taken and the request recorded (or the unfinished one resumed)."""
    build, finished = base_build(layout, kind)
    # Every check that can refuse the increment, before its first byte (the weights' feasibility
    # needs the scan: it runs at the plan, before any shard, and a refusal there is rolled back).
    meta = check_increment(req, layout, kind, build)
    check_extractors(req)
    check_metadata(req.sources, req.config.filters, predicts_tags(req.config), req.storage)
    check_policy_sources(layout, build, req)
    repaired = []
    if finished is not None:  # OUT as its last commit left it, before anything is added (pipelines/repair.py)
        repaired = repair_finished(req, layout, finished).repaired
    number = len(build.get("appends", [])) + 1
    inc = Increment(layout, number)
    if layout.exists(inc.request):
        started = layout.read_json(inc.request)
        mine = {k: meta[k] for k in ("kind", "reasons", "sources", "config")}
        if {k: started[k] for k in mine} != mine:
            changes = diff_dicts({k: started[k] for k in mine}, mine)
            raise BuildRefused(
                f"{req.out} has an unfinished {started['kind']} (#{number}) with another request "
                f"({'; '.join(changes[:4])}); run that command again to finish it first"
            )
        meta = started
    else:
        inc.remove()  # a kill before the request was recorded: nothing else in it counts
        take_snapshot(layout, inc)
        meta = {**meta, "first_chunk": first_free_chunk(layout), "first_seq": build["counts"]["inputs"]}
        layout.write_json(inc.request, meta)
    return Base(kind, inc, meta, build), {}, {}, repaired
