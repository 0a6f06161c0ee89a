"""Materialize: every planned shard not yet written, on a pool of ShardMaterializer actors."""

from __future__ import annotations

from typing import Any

from sharding.layout import Layout

from ..progress import Progress
from ..shardcheck import intact_states
from .plan import PlanReader
from .request import BuildRequest, log


def small_state(state: dict[str, Any]) -> dict[str, Any]:
    """What the driver keeps of a shard's state: not the written keys (the plan minus the late
    rejects gives them), so its memory grows with shards and rejects, not with samples."""
    return {k: v for k, v in state.items() if k not in ("written", "timing")}


def materialize(req: BuildRequest, layout: Layout, plan: PlanReader) -> dict[str, dict[str, Any]]:
    """Write every missing shard on a pool of ShardMaterializer actors (extractors loaded once per actor)."""
    # The plan is read shard by shard (PlanReader): only the shards in flight become Python rows.
    spans = plan.spans
    # a shard is done when its state is there and its tar has the recorded size and sha256
    states = {shard: small_state(st) for shard, st in intact_states(layout, sorted(spans)).items()}
    todo = [shard for shard in sorted(spans) if shard not in states]
    progress = Progress("materialize", total=plan.num_rows, unit="samples", enabled=req.show_progress)
    progress.update(sum(spans[s][1] for s in states))
    states.update(write_shards(req, layout, plan, todo, progress))
    progress.close()
    return states


def write_shards(
    req: BuildRequest, layout: Layout, plan: PlanReader, todo: list[str], progress: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """Write the shards ``todo`` of ``plan`` (each tar, then its state marker) on an actor pool in
    the Ray session of the caller; returns their small states. Also the repair's way to rewrite a
    damaged shard (pipelines/repair.py): the same rows give the same bytes."""
    if not todo:
        return {}
    from ..distribute import actor_pool, pool_shape
    from ..tasks import MaterializeSettings, ShardMaterializer

    states: dict[str, dict[str, Any]] = {}
    spans = plan.spans
    # Largest shards first (shards are grouped by bucket, so their sizes differ): the phase ends
    # with small ones and no core waits long on the last big shard (docs/scale.md). Bytes per shard
    # do not depend on the order.
    todo = sorted(todo, key=lambda shard: (-spans[shard][1], shard))
    shape = pool_shape(req.config.materialize, len(todo))
    settings = MaterializeSettings.from_config(req.config, shape.device, req.storage)
    # one running, one queued per actor: bounded in-flight work, no idle gap between shards; only the
    # shards in flight become Python rows (PlanReader reads their row groups)
    with actor_pool(ShardMaterializer, (layout, settings), shape, per_actor=2) as pool:
        for shard, state in pool.map(todo, "materialize", lambda shard: (plan.rows(shard),)):
            if req.trace is not None:
                req.trace.unit("materialize", state.get("timing"))
            states[shard] = small_state(state)
            if progress is not None:
                progress.update(spans[shard][1])
        if pool.lost:
            log(req, f"materialize: {pool.lost} actor(s) lost; their shards were redone on the others")
    return states
