"""Enumerate: the sources streamed into records parts; a build takes every input, an append the
inputs its base has not seen, a retry the rejects of the given reasons."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.sources import SourceError, check_metadata, iter_records
from sharding.layout import REJECTS, Layout
from sharding.schema import RECORD_SCHEMA

from ..config import BuildConfig
from ..progress import Progress
from .base import Base, Increment, records_parts
from .request import ALL_REASONS, APPEND, BuildRequest

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


def predicts_tags(config: BuildConfig) -> bool:
    """A tagger fills tags and ratings for records without them ([scorers.wd_tagger])."""
    return any(s.name == "wd_tagger" for s in config.scorers)


def enumerate_inputs(req: BuildRequest, layout: Layout, base: Base) -> dict[str, Any]:
    """The phase's one entry: the inputs ``base`` selects streamed into records parts. Returns what
    the scan takes: ``first_chunk`` .. ``chunks`` (scan units onto the empty base, records parts onto
    a finished one), ``inputs`` (new inputs) and ``scanned``."""
    if base.inc is None:
        _enumerate_all(req, layout)
        return enumerated_work(layout)
    return _enumerate_selected(req, layout, base.inc, base.meta)


def enumerated_work(layout: Layout) -> dict[str, Any]:
    """What a fresh build's enumerate gave the scan (``enumerate_inputs`` onto the empty base)."""
    done = layout.read_json(layout.enumerated)
    return {"first_chunk": 0, "chunks": done["chunks"], "inputs": done["inputs"], "scanned": done["inputs"]}


def _enumerate_all(req: BuildRequest, layout: Layout) -> int:
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


def _enumerate_selected(req, layout: Layout, inc: Increment, meta: dict[str, Any]) -> dict[str, Any]:
    """Records chunks of the unseen inputs (append) or of the retried rejects (retry)."""
    if layout.exists(inc.enumerated):
        return layout.read_json(inc.enumerated)
    first_chunk, first_seq = meta["first_chunk"], meta["first_seq"]
    if meta["kind"] == APPEND:
        seen = _seen_ids(layout, records_parts(layout, first_chunk))
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
