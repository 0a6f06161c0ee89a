"""The plan phase's near-duplicate step: pairs (locally or as Ray tasks), groups, keepers, reject rows.

The search itself is ``curation.dedup`` (pure NumPy). Above ``dedup.ray_threshold`` kept samples
it runs as Ray tasks, one per (substring, key prefix) unit: each task holds only its unit's share
of the lookup table, so the table is spread over the cluster instead of one node's memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curation.dedup import DedupConfig, DedupResult, as_unsigned, near_pairs, resolve
from sharding.schema import REJECT_ID_COLUMNS, REJECT_SCHEMA

from .columnar import codes

ROUTE_LOCAL, ROUTE_RAY = "local", "ray"


def ray_map(fn, hashes: np.ndarray, units: list[tuple[int, int]], **kwargs: Any) -> list[Any]:
    """Run ``fn(hashes, unit=u, **kwargs)`` for every unit as a Ray task; hashes go to the object store once."""
    from .distribute import map_tasks

    results: dict[int, Any] = dict(
        map_tasks(_unit_call, units, shared={"fn": fn, "hashes": hashes, "kwargs": kwargs})
    )
    return [results[n] for n in range(len(units))]


def _unit_call(unit: tuple[int, int], fn, hashes: np.ndarray, kwargs: dict[str, Any]) -> Any:
    return fn(hashes, unit=unit, **kwargs)


def find_pairs(phash: np.ndarray, cfg: DedupConfig) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """Near pairs of the hashes and the route taken ("local" or "ray")."""
    if len(phash) > cfg.ray_threshold:
        pairs = near_pairs(phash, cfg.radius, cfg.parts, prefix_bits=cfg.ray_prefix_bits, map_units=ray_map)
        return pairs, ROUTE_RAY
    return near_pairs(phash, cfg.radius, cfg.parts), ROUTE_LOCAL


def dedup_arrays(
    phash: np.ndarray, sha_codes: np.ndarray, score: np.ndarray, pixels: np.ndarray, seq: np.ndarray,
    cfg: DedupConfig,
) -> tuple[DedupResult, dict[str, Any]]:  # fmt: skip
    """Keeper of every kept sample from its columns alone (no per-sample Python objects), and stats."""
    (i, j), route = find_pairs(phash, cfg)
    result = resolve((i, j), sha_codes, score, pixels, seq)
    stats = {"route": route, "pairs": int(len(i)), "dropped": int(result.dropped.sum())}
    return result, stats


def duplicate_notes(
    dropped: np.ndarray, keeper: np.ndarray, exact: np.ndarray,
    keys: pa.Array | pa.ChunkedArray, phash: np.ndarray, score: np.ndarray,
) -> pa.Table:  # fmt: skip
    """``stage``, ``reason``, ``detail`` and ``duplicate_of`` of the reject row of each dropped sample
    (``dropped``: kept-row indices; the other arrays cover every kept sample). One small row per
    duplicate, so the plan makes them once and frees the per-sample arrays before it streams."""
    h = as_unsigned(phash)
    keeper_keys = pa.chunked_array(keys).take(pa.array(keeper[dropped], pa.int64())).to_pylist()
    reasons, details = [], []
    for d, kept_key in zip(dropped.tolist(), keeper_keys, strict=True):
        k = int(keeper[d])
        same = bool(exact[d])
        reasons.append("exact_duplicate" if same else "near_duplicate")
        details.append(
            ("same sha256 as " if same else f"phash {int(np.bitwise_count(h[d] ^ h[k]))} bits from ")
            + kept_key + f" (quality {_fmt(score[k])} kept over {_fmt(score[d])})"
        )  # fmt: skip
    return pa.table({
        "stage": pa.array(["dedup"] * len(reasons), pa.string()),
        "reason": pa.array(reasons, pa.string()),
        "detail": pa.array(details, pa.string()),
        "duplicate_of": pa.array(keeper_keys, pa.string()),
    })  # fmt: skip


def reject_rows(ids: pa.Table, notes: pa.Table) -> pa.Table:
    """The dedup reject rows (``REJECT_SCHEMA``): ``ids`` (``REJECT_ID_COLUMNS``) row k is the sample
    of ``notes`` row k (``duplicate_notes``)."""
    table = ids.select(list(REJECT_ID_COLUMNS))
    for name in notes.column_names:
        table = table.append_column(name, notes[name])
    return table.select(REJECT_SCHEMA.names).cast(REJECT_SCHEMA)


def deduplicate(kept: pa.Table, cfg: DedupConfig) -> tuple[pa.Table, list[dict[str, Any]], dict[str, Any]]:
    """(kept samples without duplicates, one reject row per dropped sample, stats)."""
    n = kept.num_rows
    if not cfg.enabled or n == 0:
        return kept, [], {"route": None, "pairs": 0, "dropped": 0}
    phash = kept["phash"].to_numpy(zero_copy_only=False).astype(np.int64)
    score = kept["quality_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    pixels = (
        kept["width"].to_numpy(zero_copy_only=False) * kept["height"].to_numpy(zero_copy_only=False)
    ).astype(np.float64)
    seq = kept["seq"].to_numpy(zero_copy_only=False)
    result, stats = dedup_arrays(phash, codes(kept["sha256"])[0], score, pixels, seq, cfg)
    dropped = np.flatnonzero(result.dropped)
    ids = kept.select(list(REJECT_ID_COLUMNS)).take(pa.array(dropped, pa.int64()))
    notes = duplicate_notes(dropped, result.keeper, result.exact, kept["key"], phash, score)
    rejects = reject_rows(ids, notes).to_pylist()
    mask = np.ones(n, bool)
    mask[dropped] = False
    return kept.filter(pa.array(mask)), rejects, stats


def _fmt(x: float) -> str:
    return "none" if np.isnan(x) else f"{x:.3f}"
