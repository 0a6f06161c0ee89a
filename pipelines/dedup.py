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


def searches_on_ray(samples: int, cfg: DedupConfig) -> bool:
    """Whether the near-duplicate search over ``samples`` kept samples runs as Ray tasks."""
    return samples > cfg.ray_threshold


def find_pairs(phash: np.ndarray, cfg: DedupConfig) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """Near pairs of the hashes and the route taken ("local" or "ray")."""
    if searches_on_ray(len(phash), cfg):
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


def duplicate_notes(exact: np.ndarray, bits: np.ndarray, keeper_keys: list[str], why: list[str]) -> pa.Table:
    """``stage``, ``reason``, ``detail`` and ``duplicate_of`` of the reject row of each dropped sample:
    row k is the same file as (``exact``) or ``bits`` phash bits from ``keeper_keys[k]``, which was
    kept as ``why[k]`` says (``quality_note``, or where it is kept). One small row per duplicate, so
    the plan makes them once and frees the per-sample arrays before it streams."""
    details = [
        ("same sha256 as " if same else f"phash {int(d)} bits from ") + f"{key} ({note})"
        for same, d, key, note in zip(np.asarray(exact).tolist(), np.asarray(bits).tolist(), keeper_keys, why, strict=True)
    ]  # fmt: skip
    return pa.table({
        "stage": pa.array(["dedup"] * len(details), pa.string()),
        "reason": pa.array(["exact_duplicate" if e else "near_duplicate" for e in np.asarray(exact).tolist()], pa.string()),
        "detail": pa.array(details, pa.string()),
        "duplicate_of": pa.array(keeper_keys, pa.string()),
    })  # fmt: skip


def quality_note(kept: float, dropped: float) -> str:
    """Why a build kept one of two duplicates: its quality over the other's."""
    return f"quality {_fmt(kept)} kept over {_fmt(dropped)}"


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
    keeper = result.keeper[dropped]
    bits = np.bitwise_count(as_unsigned(phash[dropped]) ^ as_unsigned(phash[keeper]))
    keeper_keys = kept["key"].take(pa.array(keeper, pa.int64())).to_pylist()
    why = [quality_note(score[k], score[d]) for k, d in zip(keeper.tolist(), dropped.tolist(), strict=True)]
    notes = duplicate_notes(result.exact[dropped], bits, keeper_keys, why)
    rejects = reject_rows(ids, notes).to_pylist()
    mask = np.ones(n, bool)
    mask[dropped] = False
    return kept.filter(pa.array(mask)), rejects, stats


def _fmt(x: float) -> str:
    return "none" if np.isnan(x) else f"{x:.3f}"
