"""The scan with learned scorers: decode on CPU tasks, score on a pool of Ray Data actors.

Without ``[scorers.*]`` the scan is one task per records chunk (pipelines/tasks.scan_chunk). With
scorers it is two stages over the same chunks:

1. ``decode_chunk`` (a task, one CPU): metadata filters, decode, metrics, hash, as always; it
   returns the chunk's rows (Arrow IPC) and the kept images' work copies (long side <= 512) as
   bytes, so no pixels go through Python objects;
2. ``ScanScorer`` (``map_batches`` over an actor pool): each actor builds its scorers once, on a
   GPU share when the cluster has GPUs (``[scoring] gpu_share``: torch on CUDA, onnxruntime's CUDA
   provider when the node has onnxruntime-gpu), else on CPU; it scores the kept images in batches,
   applies the prediction filters and the classifiers' verdicts (curation/scorers/apply.py),
   computes the quality score (which may read ``aesthetic`` / ``dbaesthetic_percentile``) and
   writes ``scan/part-NNNNNN.parquet`` atomically.

With a photo classifier (``anime_real``, ``anime_classify``) configured, stage 1 applies the
illustration cut lowered by ``metrics.illustration_defer`` (``apply.defer_illustration``): the images
the pixel model is unsure about reach the classifier instead of being cut at ``min_illustration``.

A chunk's part is written only when both stages are done, so a killed build rescans the chunks in
flight and nothing else. Every scorer is built once on the driver before work starts
(``check_scorers``): bad weights are one ConfigError (exit 2), and its version and checkpoint
hashes go into build.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from curation.scan import ScanSettings, finish_quality, scan_row
from sharding.layout import Layout
from sharding.schema import SCAN_SCHEMA

from .config import BuildConfig, ConfigError, ScorerSpec

SCORER_CPU_SHARE = 0.5  # on CPUs, scorer actors take half of them by default: the other half decodes


def _scorer(spec: dict[str, Any] | ScorerSpec, device: str) -> Any:
    from curation import scorers

    if isinstance(spec, ScorerSpec):
        spec = {"name": spec.name, "weights": spec.weights, "options": spec.options}
    return scorers.create(spec["name"], weights=spec.get("weights"), device=device, **spec.get("options", {}))


def check_scorers(cfg: BuildConfig) -> dict[str, dict[str, Any]]:
    """Version, options and checkpoint sha256s of every configured scorer; ConfigError if one cannot load."""
    records = {}
    for spec in cfg.scorers:
        try:
            scorer = _scorer(spec, "cpu")
        except (ValueError, OSError) as exc:  # groundwork.checkpoints.WeightsError is a ValueError
            raise ConfigError(f"scorer {spec.name!r}: {exc}") from None
        records[spec.name] = {
            "version": scorer.version,
            "options": spec.options,
            "weights": spec.weights,
            "weights_sha256": scorer.files.get(getattr(scorer, "main_file", "model.safetensors")),
            "files_sha256": dict(scorer.files),
            **getattr(scorer, "details", {}),
        }
        del scorer
    return records


def scorer_settings(settings: ScanSettings, cfg: BuildConfig) -> ScanSettings:
    """The scan settings with the configured scorers: the illustration cut deferred to a photo classifier."""
    from dataclasses import replace

    from curation.scorers.apply import defer_illustration

    return replace(settings, metrics=defer_illustration(settings.metrics, [s.name for s in cfg.scorers]))


def decode_chunk(
    item: dict[str, Any], layout: Layout, settings: ScanSettings, unit: int = 0, records_rows: int = 0
) -> dict[str, Any]:
    """Stage 1: scan one chunk up to (not including) the quality score; rows and pixels as bytes."""
    from .tasks import unit_records

    chunk = int(item["chunk"])
    records = unit_records(layout, chunk, unit, records_rows)
    rows, index, shapes, pixels = [], [], [], []
    for record in records:
        row, small = scan_row(record, settings)
        rows.append(row)
        if small is not None:
            index.append(len(rows) - 1)
            shapes.append(list(small.shape))
            pixels.append(np.ascontiguousarray(small, dtype=np.uint8).tobytes())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCAN_SCHEMA) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=SCAN_SCHEMA))
    return {
        "chunk": chunk,
        "rows": sink.getvalue().to_pybytes(),
        "kept": json.dumps({"index": index, "shapes": shapes}),
        "pixels": b"".join(pixels),
    }


def _unpack(item: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[int, np.ndarray]]]:
    rows = pa.ipc.open_stream(pa.py_buffer(item["rows"])).read_all().to_pylist()
    kept = json.loads(item["kept"])
    flat = np.frombuffer(item["pixels"], dtype=np.uint8)
    images, at = [], 0
    for i, shape in zip(kept["index"], kept["shapes"], strict=True):
        n = math.prod(shape)
        images.append((i, flat[at : at + n].reshape(shape)))
        at += n
    return rows, images


class ScanScorer:
    """Stage 2, a Ray Data actor: scorers built once, then score + finish + write each chunk it gets."""

    def __init__(
        self,
        layout: Layout,
        settings: ScanSettings,
        specs: list[dict[str, Any]],
        fill_tags: bool,
        device: str,
    ):
        from .tasks import scorer_for

        if device == "cpu":  # the one CPU Ray gave this actor; also fixes the float reduction order
            import torch

            torch.set_num_threads(1)
        self.layout, self.settings, self.fill_tags = layout, settings, fill_tags
        self.scorers = {s["name"]: _scorer(s, device) for s in specs}
        self.learned = scorer_for(settings)  # the [quality] scorer, as scan_chunk runs it

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from curation.scorers.apply import apply_predictions, judge, score_images

        done = {"chunk": [], "rows": [], "kept": []}
        layout = self.layout
        for j in range(len(batch["chunk"])):
            rows, images = _unpack({k: batch[k][j] for k in ("rows", "kept", "pixels")})
            score_images(rows, images, self.scorers)
            if self.learned is not None and images:
                for (i, _), value in zip(images, self.learned([p for _, p in images]), strict=True):
                    rows[i]["learned_score"] = float(value)
            for row in rows:
                apply_predictions(row, self.settings.filters, self.fill_tags)
                judge(row, self.scorers)
                if row.get("sharpness") is not None:  # as curation.scan.scan_rows: every decoded image
                    finish_quality(row, self.settings)
            chunk = int(batch["chunk"][j])
            layout.write_parquet(layout.scan_part(chunk), pa.Table.from_pylist(rows, schema=SCAN_SCHEMA))
            done["chunk"].append(chunk)
            done["rows"].append(len(rows))
            done["kept"].append(sum(r["status"] == "kept" for r in rows))
        return {k: np.asarray(v, dtype=np.int64) for k, v in done.items()}


def scored_scan(
    layout: Layout, settings: ScanSettings, cfg: BuildConfig, pending: list[int], unit: int = 0,
    records_rows: int = 0,
) -> Iterator[dict]:  # fmt: skip
    """Scan the ``pending`` chunks through both stages; yields ``{"chunk", "rows", "kept"}`` per chunk written."""
    from .distribute import pool_shape, tasks_then_actors

    shape = pool_shape(cfg.scoring, len(pending), cpu_share=SCORER_CPU_SHARE)
    settings = scorer_settings(settings, cfg)
    specs = [{"name": s.name, "weights": s.weights, "options": dict(s.options)} for s in cfg.scorers]
    yield from tasks_then_actors(
        [{"chunk": c} for c in pending],
        decode_chunk,
        {"layout": layout, "settings": settings, "unit": unit, "records_rows": records_rows},
        ScanScorer,
        {"layout": layout, "settings": settings, "specs": specs, "fill_tags": cfg.scoring.fill_tags,
         "device": shape.device},
        shape,
    )  # fmt: skip
