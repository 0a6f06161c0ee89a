"""Which written shards can be trusted: every shard's size and sha256 against its record.

A resume (materialize) and a re-run of a finished build check every shard, because a same-size bit
flip is as damaged as a truncation. At Danbooru scale that is thousands of shards and terabytes:
sizes come from one listing of ``shards/`` (paginated: one request per 1000 objects on a store,
not one per shard), and the sha256 reads run in parallel: as Ray tasks spread over the cluster when
Ray is up (each node reads the shards it hashes), on a few driver threads otherwise (hashlib
releases the GIL). Only shards whose size matches are read at all.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from typing import Any

from sharding.layout import DamagedFileError, Layout

DRIVER_THREADS = 4  # reads in flight from the driver (a store's latency, not its CPU, is the limit)
SHARDS_PER_TASK = 8  # a Ray task hashes this many shards: few tasks, still spread over the nodes


def _hash_paths(paths: list[str], layout: Layout) -> list[str | None]:
    """sha256 of each path (None: it vanished or cannot be read; the shard is then redone)."""
    out: list[str | None] = []
    for path in paths:
        try:
            out.append(layout.sha256(path))
        except OSError:
            out.append(None)
    return out


def _hashes(layout: Layout, paths: list[str]) -> dict[str, str | None]:
    if not paths:
        return {}
    from .distribute import map_tasks, ray_is_up

    if ray_is_up():
        groups = [paths[i : i + SHARDS_PER_TASK] for i in range(0, len(paths), SHARDS_PER_TASK)]
        found: dict[str, str | None] = {}
        for i, digests in map_tasks(_hash_paths, groups, shared={"layout": layout}):
            found.update(zip(groups[i], digests, strict=True))
        return found
    with concurrent.futures.ThreadPoolExecutor(DRIVER_THREADS) as pool:
        return dict(zip(paths, pool.map(lambda p: _hash_paths([p], layout)[0], paths), strict=True))


def damage(layout: Layout, stats: list[Mapping[str, Any]]) -> dict[str, str]:
    """``stats``: shard records ({path, bytes, sha256}); returns path -> what is wrong, for the bad ones."""
    listed = layout.listed_sizes(layout.shards_dir)
    where = {s["path"]: layout.shard(s["path"]) for s in stats}
    wrong: dict[str, str] = {}
    to_hash = []
    for s in stats:
        size = listed.get(where[s["path"]])
        if size is None:
            wrong[s["path"]] = "missing"
        elif size != s["bytes"]:
            wrong[s["path"]] = f"{size} bytes, {s['bytes']} recorded"
        else:
            to_hash.append(s)
    digests = _hashes(layout, [where[s["path"]] for s in to_hash])
    for s in to_hash:
        digest = digests[where[s["path"]]]
        if digest is None:
            wrong[s["path"]] = "missing"
        elif digest != s["sha256"]:
            wrong[s["path"]] = "sha256 differs from the recorded one"
    return wrong


def intact_states(layout: Layout, shards: list[str]) -> dict[str, dict[str, Any]]:
    """The state of every shard in ``shards`` that was written and is intact (resume of materialize)."""
    present = set(layout.listed_sizes(layout.shard_states_dir))
    written = [shard for shard in shards if layout.shard_state(shard) in present]
    with concurrent.futures.ThreadPoolExecutor(DRIVER_THREADS) as pool:  # small reads: latency-bound
        read = dict(zip(written, pool.map(lambda s: _state_or_none(layout, s), written), strict=True))
    states = {shard: st for shard, st in read.items() if st is not None}  # a damaged marker: redo the shard
    bad = damage(layout, [s["stats"] for s in states.values()])
    return {shard: st for shard, st in states.items() if st["stats"]["path"] not in bad}


def _state_or_none(layout: Layout, shard: str) -> dict[str, Any] | None:
    """A shard's state marker, or None when it cannot be read or has not a state's shape."""
    try:
        state = layout.read_json(layout.shard_state(shard))
    except (DamagedFileError, FileNotFoundError):
        return None
    stats = state.get("stats") if isinstance(state, dict) else None
    ok = isinstance(stats, dict) and stats.get("path") == shard and isinstance(state.get("rejects"), list)
    return state if ok else None
