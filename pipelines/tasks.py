"""The units of work that run on Ray workers: one scan chunk, one shard.

Each reads its inputs from OUT, writes its outputs atomically into OUT and returns a small
summary, so the driver holds no pixels and a killed build loses at most the units in flight.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import lineart
from curation.scan import scan_row
from sharding.materialize import materialize_shard
from sharding.schema import SCAN_SCHEMA

from .state import Layout, write_json, write_parquet

# Extractors are built once per worker process and reused by every shard it materializes.
_EXTRACTORS: dict[str, dict[str, Any]] = {}


def extractors_for(specs: list[dict[str, Any]]) -> dict[str, Any]:
    cache_key = json.dumps(specs, sort_keys=True)
    if cache_key not in _EXTRACTORS:
        _EXTRACTORS[cache_key] = {
            s["name"]: lineart.create(s["name"], weights=s.get("weights"), **s.get("options", {}))
            for s in specs
        }
    return _EXTRACTORS[cache_key]


def scan_chunk(item: dict[str, Any], out: str, scan_cfg: dict[str, Any]) -> dict[str, Any]:
    """Scan every record of one records chunk into ``scan/part-NNNNNN.parquet``."""
    layout = Layout(out)
    chunk = int(item["chunk"])
    records = pq.read_table(layout.records_part(chunk)).to_pylist()
    rows = [
        scan_row(
            r,
            max_pixels=scan_cfg["max_pixels"],
            min_side=scan_cfg["min_side"],
            max_aspect=scan_cfg["max_aspect"],
        )
        for r in records
    ]
    write_parquet(layout.scan_part(chunk), pa.Table.from_pylist(rows, schema=SCAN_SCHEMA))
    return {"chunk": chunk, "rows": len(rows), "kept": sum(r["status"] == "kept" for r in rows)}


def materialize_task(out: str, rows: list[dict[str, Any]], specs: list[dict[str, Any]], shard_cfg: dict[str, Any],
                     max_pixels: int) -> dict[str, Any]:  # fmt: skip
    """Write one shard and its state file; returns the state."""
    fmt = shard_cfg["image_format"]
    result = materialize_shard(
        out,
        rows,
        extractors_for(specs),
        image_format=fmt,
        quality=shard_cfg["jpeg_quality"] if fmt == "jpg" else shard_cfg["webp_quality"],
        max_pixels=max_pixels,
    )
    state = {"stats": dataclasses.asdict(result.stats), "written": result.written, "rejects": result.rejects}
    write_json(Layout(out).shard_state(result.stats.path), state)
    return state
