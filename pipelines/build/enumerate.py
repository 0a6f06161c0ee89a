"""Enumerate: the sources streamed into records parts; a build takes every input, an append the
inputs its base has not seen, a retry the rejects of the given reasons."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.sources import SourceError, check_metadata, iter_records
from sharding.layout import REJECTS, Layout
from sharding.schema import RECORD_SCHEMA

from ..config import BuildConfig
from ..progress import Progress
from .base import Base, records_parts
from .request import ALL_REASONS, APPEND, BuildRequest

RECORDS_PART = 4096  # inputs per records part (private) and the largest scan part


def scan_unit(inputs: int, chunk_size: int, cores: int = 1) -> int:
    """Inputs per scan task and scan part: ``scan.chunk_size``, or with 0 a power of two from 32 to
    RECORDS_PART giving ~64 tasks, so a small build still spreads over every core and a large one
    writes parts of thousands of rows (resume loses at most the parts in flight).

    Under 64 units of 32 (one records part) the units are as equal as can be and as many as a
    multiple of ``cores`` (this machine's: an embedded build's; a cluster's builds are larger):
    615 inputs on 2 cores made 19 units of 32 and one of 7, so one core scanned the last unit alone
    (1.2 core-s idle at the scan's tail, docs/scale.md); now 20 units of 31 and 26. The shards do not
    depend on the units (tests/test_golden_build.py)."""
    if chunk_size:
        return chunk_size
    unit = 32
    while unit * 2 <= min(RECORDS_PART, inputs // 64):
        unit *= 2
    if unit == 32 and inputs > unit:
        units = -(-inputs // unit)
        units = -(-units // max(1, cores)) * max(1, cores)
        unit = -(-inputs // units)
    return unit


def predicts_tags(config: BuildConfig) -> bool:
    """A tagger fills tags and ratings for records without them ([scorers.wd_tagger])."""
    return any(s.name == "wd_tagger" for s in config.scorers)


def enumerate_inputs(req: BuildRequest, layout: Layout, base: Base) -> dict[str, Any]:
    """The phase's one entry: the inputs ``base`` selects streamed into records parts. Returns what
    the scan takes: ``first_chunk`` .. ``chunks`` (scan units onto the empty base, records parts onto
    a finished one), ``inputs`` (new inputs) and ``scanned``.

    Done when its record exists and so does every records part it counts: a part deleted (it was
    damaged) is written again by enumerating again (the others are kept)."""
    record = layout.enumerated if base.empty else base.inc.enumerated
    if layout.exists(record) and _parts_present(layout, base, layout.read_json(record)):
        return _work(layout, base)
    if base.empty:
        check_metadata(req.sources, req.config.filters, predicts_tags(req.config), req.storage)
    first_chunk, first_seq = (0, 0) if base.empty else (base.meta["first_chunk"], base.meta["first_seq"])
    pick = _selection(layout, base, first_seq)
    size = req.config.scan.chunk_size or RECORDS_PART
    chunk, rows, count = first_chunk, [], 0
    progress = Progress("enumerate", total=None, unit="inputs", enabled=req.show_progress)

    def flush() -> None:
        nonlocal chunk, rows
        path = layout.records_part(chunk)
        if not layout.exists(path):  # a re-enumeration after a kill yields the same chunks
            layout.write_parquet(path, pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
        chunk, rows = chunk + 1, []

    try:
        for spec in req.sources:
            met = False
            for rec in iter_records(spec, req.storage):
                met = True
                seq = pick((rec.source, rec.source_id))
                if seq is None:
                    continue
                row = rec.to_row()
                row["seq"] = seq
                rows.append(row)
                count += 1
                progress.update(1)
                if len(rows) == size:
                    flush()
            if not met and base.empty:  # an ordinary mistake (wrong or empty folder), not an empty build
                raise SourceError(f"source {spec.describe()} holds no images or posts")
        if rows:
            flush()
    finally:
        progress.close()
    if base.empty:
        unit = scan_unit(count, req.config.scan.chunk_size, os.cpu_count() or 1)
        done = {"chunks": -(-count // unit), "inputs": count, "records_parts": chunk, "records_rows": size}
        layout.write_json(record, {**done, "unit": unit})
    else:
        inputs = count if base.kind == APPEND else 0
        layout.write_json(
            record, {"first_chunk": first_chunk, "chunks": chunk, "inputs": inputs, "scanned": count}
        )
    return _work(layout, base)


def _selection(layout: Layout, base: Base, first_seq: int) -> Callable[[tuple[str, str]], int | None]:
    """The seq a (source, source_id) takes, or None where the base does not select it: every input
    onto the empty base; onto a finished one the first of each id it has not seen (append) or of its
    rejects of the given reasons, at their seq (retry)."""
    seqs = itertools.count(first_seq)
    if base.empty:
        return lambda ident: next(seqs)
    if base.kind == APPEND:
        seen = _seen_ids(layout, records_parts(layout, base.meta["first_chunk"]))

        def unseen(ident: tuple[str, str]) -> int | None:
            if ident in seen:  # the base holds it, or the source itself repeats an id
                return None
            seen.add(ident)
            return next(seqs)

        return unseen
    rejects = layout.read_parquet(base.inc.base(REJECTS), columns=["seq", "source", "source_id", "reason"])
    if base.meta["reasons"] != [ALL_REASONS]:
        rejects = rejects.filter(pc.is_in(rejects["reason"], pa.array(base.meta["reasons"])))
    targets = dict(
        zip(
            zip(rejects["source"].to_pylist(), rejects["source_id"].to_pylist(), strict=True),
            rejects["seq"].to_pylist(),
            strict=True,
        )
    )
    return lambda ident: targets.pop(ident, None)  # popped: a repeated id is taken once


def _parts_present(layout: Layout, base: Base, done: dict[str, Any]) -> bool:
    first, end = (
        (0, done.get("records_parts", done["chunks"]))
        if base.empty
        else (done["first_chunk"], done["chunks"])
    )
    listed = layout.listed_sizes(layout.records_dir)
    return all(layout.records_part(c) in listed for c in range(first, end))


def _work(layout: Layout, base: Base) -> dict[str, Any]:
    if base.empty:
        return enumerated_work(layout)
    return layout.read_json(base.inc.enumerated)


def enumerated_work(layout: Layout) -> dict[str, Any]:
    """What a fresh build's enumerate gave the scan (``enumerate_inputs`` onto the empty base)."""
    done = layout.read_json(layout.enumerated)
    return {"first_chunk": 0, "chunks": done["chunks"], "inputs": done["inputs"], "scanned": done["inputs"]}


def record_units(layout: Layout) -> tuple[int, int, int]:
    """(records parts, rows per records part, inputs per scan unit) of an enumerated build."""
    e = layout.read_json(layout.enumerated)
    return e.get("records_parts", e["chunks"]), e.get("records_rows", 0), e.get("unit", 0)


def _seen_ids(layout: Layout, chunks: list[int]) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    for c in chunks:
        t = layout.read_parquet(layout.records_part(c), columns=["source", "source_id"])
        seen.update(zip(t["source"].to_pylist(), t["source_id"].to_pylist(), strict=True))
    return seen
