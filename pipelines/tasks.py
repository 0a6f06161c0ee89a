"""The units of work that run on Ray workers: one scan chunk (a task), one shard (a task, or a call
on an actor that holds the extractors' models).

Each reads its inputs from OUT, writes its outputs atomically into OUT and returns a small
summary, so the driver holds no pixels and a killed build loses at most the units in flight.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import pyarrow as pa

from curation.scan import ScanSettings, scan_rows
from sharding.layout import Layout
from sharding.schema import SCAN_SCHEMA

from .phasetimes import unit_clock

# A scan worker imports this module before its first task (Ray ships the function by reference):
# the shard actor's modules (extractors, augmentations, the shard writer, the config) are imported
# where the actor uses them, so the scan's first units start sooner (0.22 -> 0.14 s here).
if TYPE_CHECKING:
    from lineart.augment import AugmentPolicy
    from lineart.quality import PairQuality

    from .config import BuildConfig, ExtractorSpec


def make_extractors(specs: list[dict[str, Any]], device: str = "cpu") -> dict[str, Any]:
    import lineart

    return {
        s["name"]: lineart.create(s["name"], weights=s.get("weights"), device=device, **s.get("options", {}))
        for s in specs
    }


_PER_PROCESS: dict[str, Any] = {}


def once_per_process(kind: str, config: Any, make: Callable[[], Any]) -> Any:
    """``make()``, built once per worker process for each JSON-equal ``config`` of this ``kind``: the
    tasks on a warm worker reuse what an earlier task loaded."""
    cache_key = kind + json.dumps(config, sort_keys=True)
    if cache_key not in _PER_PROCESS:
        _PER_PROCESS[cache_key] = make()
    return _PER_PROCESS[cache_key]


def scorer_for(settings: ScanSettings) -> Any:
    """The learned quality scorer of these settings, loaded once per worker process (None without one)."""
    cfg = settings.quality
    if not cfg.scorer:
        return None

    def load() -> Any:
        from curation.quality import LearnedScorer

        return LearnedScorer(cfg)

    return once_per_process("scorer", dataclasses.asdict(cfg), load)


def unit_records(layout: Layout, chunk: int, unit: int = 0, records_rows: int = 0) -> list[dict[str, Any]]:
    """The records of scan unit ``chunk``: ``unit`` rows from ``chunk * unit``, inside one records part
    of ``records_rows`` rows (0: units and records parts are the same)."""
    if unit and records_rows:
        first = chunk * unit
        table = layout.read_parquet(layout.records_part(first // records_rows))
        return table.slice(first % records_rows, unit).to_pylist()
    return layout.read_parquet(layout.records_part(chunk)).to_pylist()


def scan_chunk(
    chunk: int, layout: Layout, settings: ScanSettings, unit: int = 0, records_rows: int = 0
) -> dict[str, Any]:
    """Scan the ``unit`` records from ``chunk * unit`` into its scan part (``Layout.scan_part``).

    A unit lies inside one records part of ``records_rows`` (0: units and records parts are the same).
    """
    cv2.setNumThreads(1)  # the task holds one CPU (num_cpus=1): OpenCV threads would oversubscribe it
    chunk = int(chunk)
    timing: dict[str, float] = {}
    try:
        with unit_clock(timing):
            records = unit_records(layout, chunk, unit, records_rows)
            rows = scan_rows(records, settings, scorer_for(settings))
        layout.write_parquet(layout.scan_part(chunk), pa.Table.from_pylist(rows, schema=SCAN_SCHEMA))
    except OSError as exc:
        # Disk full, read-only OUT: returned, not raised, so the driver reports it in one line
        # (a raised OSError would be wrapped in Ray's own error block).
        return {"chunk": chunk, "rows": 0, "kept": 0, "errno": exc.errno or 0,
                "error": exc.strerror or str(exc), "filename": str(exc.filename or "")}  # fmt: skip
    return {"chunk": chunk, "rows": len(rows), "kept": sum(r["status"] == "kept" for r in rows),
            "errno": 0, "error": "", "filename": "", "timing": {**timing, "pid": os.getpid()}}  # fmt: skip


@dataclass(frozen=True)
class MaterializeSettings:
    """What a shard actor needs, typed and frozen: made once on the driver, never re-parsed."""

    extractors: tuple[ExtractorSpec, ...]
    device: str
    image_format: str
    quality: int  # of image_format
    max_pixels: int
    max_bytes: int  # per input read, as in the scan
    storage: Any  # curation.storage.SourceStorage of URL sources
    seed: int
    augment: AugmentPolicy
    pair_quality: PairQuality

    @classmethod
    def from_config(cls, cfg: BuildConfig, device: str, storage: Any = None) -> MaterializeSettings:
        fmt = cfg.shards.image_format
        return cls(
            extractors=tuple(cfg.extractors),
            device=device,
            image_format=fmt,
            quality=cfg.shards.jpeg_quality if fmt == "jpg" else cfg.shards.webp_quality,
            max_pixels=cfg.scan.max_pixels,
            max_bytes=cfg.scan.max_bytes,
            storage=storage,
            seed=cfg.seed,
            augment=cfg.augment,
            pair_quality=cfg.pair_quality,
        )


def extractors_for(settings: MaterializeSettings) -> dict[str, Any]:
    """The extractors of these settings, built once per worker process (a shard task on a warm
    worker, an actor: models load once)."""
    specs = [dataclasses.asdict(spec) for spec in settings.extractors]
    return once_per_process(
        "extractors", [specs, settings.device], lambda: make_extractors(specs, settings.device)
    )


def write_shard(
    layout: Layout, settings: MaterializeSettings, extractors: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write one shard of ``rows`` and then its state file; returns the state and the unit's timing."""
    from sharding.materialize import materialize_shard

    timing: dict[str, Any] = {}
    with unit_clock(timing):
        result = materialize_shard(
            layout,
            rows,
            extractors,
            image_format=settings.image_format,
            quality=settings.quality,
            max_pixels=settings.max_pixels,
            max_bytes=settings.max_bytes,
            storage=settings.storage,
            augment_policy=settings.augment,
            pair_quality=settings.pair_quality,
            seed=settings.seed,
        )
    state = {
        "stats": dataclasses.asdict(result.stats),
        "written": result.written,
        "rejects": result.rejects,
        "dropped": result.dropped,
    }
    layout.write_json(layout.shard_state(result.stats.path), state)
    # the phase timing travels with the answer, not in the state file (pipelines/phasetimes.py)
    timing.update(samples=len(rows), pid=os.getpid())
    return {**state, "timing": timing}


def shard_task(rows: list[dict[str, Any]], layout: Layout, settings: MaterializeSettings) -> dict[str, Any]:
    """One shard as a Ray task (pipelines/build/materialize.py: CPU builds whose extractors are all
    classical), on whichever warm worker is free: the scan's workers go on to write the shards."""
    cv2.setNumThreads(1)  # the task holds one CPU (num_cpus=1), as the floor
    return write_shard(layout, settings, extractors_for(settings), rows)


class ShardMaterializer:
    """A Ray actor (see pipelines/build/materialize.py): builds the extractors once (models loaded
    once, on its device) and writes every shard it is given, each with its state file after the shard."""

    def __init__(self, layout: Layout, settings: MaterializeSettings):
        born = time.time()
        if settings.device == "cpu":
            cv2.setNumThreads(1)  # one CPU per actor (num_cpus=1): one OpenCV thread, as the floor
        self.layout = layout
        self.settings = settings
        self.extractors = extractors_for(settings)
        self._start: dict[str, float] | None = {"born": born, "ready": time.time()}  # sent once

    def materialize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Write one shard and its state file; returns the state (with the unit's timing)."""
        answer = write_shard(self.layout, self.settings, self.extractors, rows)
        answer["timing"].update(self._start or {})  # the actor's start-up, with its first shard
        self._start = None
        return answer
