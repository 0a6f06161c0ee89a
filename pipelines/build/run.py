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
from typing import Any

import lineart
from curation.sources import SourceError, check_metadata, check_unique_names
from groundwork.configtable import diff_dicts
from sharding.layout import Layout

from ..config import ConfigError
from ..phasetimes import PhaseTrace
from .base import (
    Increment,
    base_build,
    check_increment,
    check_policy_sources,
    check_request,
    first_free_chunk,
    rollback,
    take_snapshot,
)  # fmt: skip
from .enumerate import enumerate_increment, enumerate_records, predicts_tags
from .finalize import finalize, finalize_increment
from .materialize import materialize
from .plan import PlanReader, plan, plan_increment
from .repair import repair_finished
from .request import APPEND, RETRY, BuildRefused, BuildRequest, BuildSummary, log
from .scan import increment_settings, scan

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
    """Run or resume a build; safe to call again after a crash at any point."""
    from ..raycluster import ray_session

    layout = req.layout or Layout(req.out)
    req.out = layout.out  # absolute for a local OUT, the URL otherwise
    if req.append and req.retry:
        raise BuildRefused("--append and --retry are two runs: give one, then the other")
    if (req.append or req.retry) and layout.exists(layout.request):
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
    from ..scoring import check_scorers

    scorer_records = check_scorers(req.config)  # the same for the learned scorers
    timings: dict[str, float] = {}
    start = time.perf_counter()
    t = time.perf_counter()
    chunks = enumerate_records(req, layout)
    timings["enumerate"] = time.perf_counter() - t
    with ray_session(req.address) as where:
        log(req, f"linepairs: building {req.out} on {where}")
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


def run_increment(req, kind: str) -> Any:
    """Run or resume one append / retry on the finished build in ``req.out``."""
    from ..raycluster import ray_session

    layout = req.layout or Layout(req.out)
    req.out = layout.out
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
    start = time.perf_counter()
    try:
        enumerated = enumerate_increment(req, layout, inc, meta)
    except SourceError:
        rollback(layout, inc, meta["first_chunk"])
        raise
    if enumerated["scanned"] == 0:
        inc.remove()
        log(req, f"linepairs: nothing to {kind} in {req.out}")

        return BuildSummary(
            req.out, build["counts"], build["timings"], already_complete=True, weights=build.get("weights"),
            repaired=repaired,
        )  # fmt: skip
    with ray_session(req.address) as where:
        log(req, f"linepairs: {kind} #{number} to {req.out} on {where}: {enumerated['scanned']} inputs")
        settings = increment_settings(req, layout, enumerated["first_chunk"], enumerated["chunks"])
        scan(req, layout, enumerated["chunks"], first=enumerated["first_chunk"], settings=settings)
        try:
            plan = plan_increment(req, layout, inc, enumerated)
        except ConfigError:
            rollback(layout, inc, meta["first_chunk"])
            raise
        states = materialize(req, layout, PlanReader(layout, inc.plan))  # plan_increment wrote it
    summary = finalize_increment(
        req, layout, inc, meta, enumerated, plan, states, time.perf_counter() - start
    )
    summary.repaired = repaired
    layout.remove_temp_files()
    return summary
