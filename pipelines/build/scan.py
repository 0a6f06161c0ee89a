"""Scan: the records parts decoded, measured and filtered on Ray tasks (or the scorer stage) into
scan parts; the per-source score cuts come from the records (an append keeps its old sources' cuts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.scan import ScanSettings, make_settings
from curation.storage import SourceStorage
from sharding.layout import Layout

from ..columnar import labels
from ..config import BuildConfig
from ..progress import Progress
from .base import Base, records_parts
from .enumerate import record_units
from .request import BuildRequest


def scan(
    req: BuildRequest,
    layout: Layout,
    base: Base,
    work: dict[str, Any],
    *,
    on_free: Callable[[int], None] | None = None,
) -> None:
    """Scan the chunks ``work`` enumerated (``first_chunk`` .. ``chunks - 1``) that have no scan part yet.
    ``on_free``: told the CPUs no scan task needs any more, in the scan's tail (``distribute.map_tasks``)."""
    first, chunks = work["first_chunk"], work["chunks"]
    pending = [c for c in range(first, chunks) if not layout.exists(layout.scan_part(c))]
    progress = Progress("scan", total=work["scanned"], unit="inputs", enabled=req.show_progress)
    progress.update(
        sum(layout.parquet_rows(layout.scan_part(c)) for c in range(first, chunks) if c not in pending)
    )
    if pending:
        from ..distribute import map_tasks
        from ..tasks import scan_chunk

        # Onto the empty base the scan units may slice the records parts; an increment's chunks are
        # its records parts.
        _, records_rows, unit = record_units(layout) if base.empty else (0, 0, 0)
        settings = scan_settings(req, layout, base, work)
        if req.config.scorers:  # decode tasks, then a Ray Data scorer actor pool (pipelines/scoring.py)
            from ..scoring import scored_scan

            rows = scored_scan(layout, settings, req.config, pending, unit, records_rows)
        else:
            shared = {"layout": layout, "settings": settings, "unit": unit, "records_rows": records_rows}
            rows = (r for _, r in map_tasks(scan_chunk, pending, shared=shared, on_free=on_free))
        for row in rows:
            if row.get("error"):  # disk full, read-only OUT: one line, not Ray's error block
                progress.close()
                raise OSError(row["errno"], row["error"], row["filename"] or None)
            if req.trace is not None:
                req.trace.unit("scan", row.get("timing"))
            progress.update(row["rows"], kept=row["kept"])
    progress.close()


def scan_settings(req: BuildRequest, layout: Layout, base: Base, work: dict[str, Any]) -> ScanSettings:
    """Per-source score cuts and quantiles from the records: the same for every task. A source the
    base holds keeps the cuts of its original records (its curation does not drift between
    increments); a new source's come from its new records (onto the empty base: every source's)."""
    cols = ["source", "score", "fav_count"]
    first = work["first_chunk"]
    end = record_units(layout)[0] if base.empty else work["chunks"]  # records parts, not scan units
    old = [layout.read_parquet(layout.records_part(c), columns=cols) for c in records_parts(layout, first)]
    new = [layout.read_parquet(layout.records_part(c), columns=cols) for c in range(first, end)]
    old_t = pa.concat_tables(old) if old else None
    parts = [old_t] if old_t is not None else []
    if new:
        new_t = pa.concat_tables(new)
        old_sources = pa.array(
            sorted(set(old_t["source"].to_pylist())) if old_t is not None else [], pa.string()
        )
        parts.append(new_t.filter(pc.invert(pc.is_in(new_t["source"], old_sources))))
    if not parts:
        return settings_from_records(
            req.config, pa.table({c: pa.array([], pa.float64()) for c in cols}), req.storage
        )
    return settings_from_records(req.config, pa.concat_tables(parts), req.storage)


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


def scan_table(layout: Layout, first: int, end: int, columns: list[str] | None = None) -> pa.Table | None:
    parts = [layout.read_parquet(layout.scan_part(c), columns=columns) for c in range(first, end)]
    return pa.concat_tables(parts) if parts else None
