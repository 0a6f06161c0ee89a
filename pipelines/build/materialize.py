"""Materialize: every planned shard not yet written, as Ray tasks on the scan's warm workers when
every extractor is classical and the cluster has no GPU (nothing to load once per process), else on
a pool of ShardMaterializer actors (models loaded once per actor, on its device)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from sharding.layout import Layout

from ..progress import Progress
from ..shardcheck import intact_states
from .plan import PlanReader
from .request import BuildRequest, log

if TYPE_CHECKING:
    from ..distribute import ActorPool


def small_state(state: dict[str, Any]) -> dict[str, Any]:
    """What the driver keeps of a shard's state: not the written keys (the plan minus the late
    rejects gives them), so its memory grows with shards and rejects, not with samples."""
    return {k: v for k, v in state.items() if k not in ("written", "timing")}


def shards_on_tasks(req: BuildRequest) -> bool:
    """Whether the shards are written as Ray tasks rather than on actors: every extractor is
    classical (no model to load once per process) and the cluster has no GPU (with GPUs the actors
    hold their shares and run the torch path). The tasks run on the workers the scan warmed, so no
    process starts between the scan and the first shard (an actor took 0.4-0.6 s: docs/scale.md),
    and Ray re-runs a task lost with its node."""
    import lineart

    from ..distribute import cluster_resources

    return cluster_resources().get("GPU", 0) == 0 and all(
        lineart.info(spec.name).kind == "classical" for spec in req.config.extractors
    )


def early_materializers(req: BuildRequest, layout: Layout) -> ActorPool | None:
    """The ShardMaterializer pool, made before the scan and started ahead of the shards, so that
    the first shard starts as soon as the plan is written (an actor takes ~1.7 s to start its
    process and import; docs/scale.md); None when the shards are written as tasks (``shards_on_tasks``).
    Its shape is what the config allows on this cluster, capped by its cores; ``write_shards`` uses
    at most one actor per shard and kills the rest. The caller starts it with ``start`` once the
    scan has returned, and before that may grow it into the scan's idle cores (``scan_tail``)."""
    from ..distribute import cluster_cpus

    if shards_on_tasks(req):
        return None
    return _materializer_pool(req, layout, cluster_cpus())


def scan_tail(req: BuildRequest, pool: ActorPool | None) -> Callable[[int], None] | None:
    """What the scan tells the CPUs it no longer needs (``distribute.map_tasks``'s ``on_free``): one
    actor started per such CPU, on a one-node cluster without scorers only. An actor holds its core
    for life, so this is safe only while no scan task can need that core again: a lost node takes
    its CPUs with it while Ray retries its tasks on the others, and a Ray Data scorer pool asks for
    cores of its own; in those builds the pool starts when the scan has returned."""
    from ..distribute import cluster_nodes

    if pool is None or req.config.scorers or cluster_nodes() != 1:
        return None
    return pool.grow


def _materializer_pool(req: BuildRequest, layout: Layout, units: int) -> ActorPool:
    from ..distribute import actor_pool, pool_shape
    from ..tasks import MaterializeSettings, ShardMaterializer

    shape = pool_shape(req.config.materialize, units)
    settings = MaterializeSettings.from_config(req.config, shape.device, req.storage)
    # one shard per actor at a time, handed out as each actor frees: the largest-first order then
    # holds (with a second one queued, the 119-sample shard of the build bench waited behind the
    # 178-sample one while the other actor ran dry: a 2.7 s tail); the next shard's rows are read ahead
    return actor_pool(ShardMaterializer, (layout, settings), shape, per_actor=1)


def materialize(
    req: BuildRequest, layout: Layout, plan: PlanReader, pool: ActorPool | None = None
) -> dict[str, dict[str, Any]]:
    """Write every missing shard (``write_shards``): on ``pool`` when the caller started one
    (``early_materializers``; the caller closes it)."""
    # The plan is read shard by shard (PlanReader): only the shards in flight become Python rows.
    spans = plan.spans
    # a shard is done when its state is there and its tar has the recorded size and sha256
    states = {shard: small_state(st) for shard, st in intact_states(layout, sorted(spans)).items()}
    todo = [shard for shard in sorted(spans) if shard not in states]
    progress = Progress("materialize", total=plan.num_rows, unit="samples", enabled=req.show_progress)
    progress.update(sum(spans[s][1] for s in states))
    states.update(write_shards(req, layout, plan, todo, progress, pool=pool))
    progress.close()
    return states


def write_shards(
    req: BuildRequest,
    layout: Layout,
    plan: PlanReader,
    todo: list[str],
    progress: Progress | None = None,
    *,
    pool: ActorPool | None = None,
) -> dict[str, dict[str, Any]]:
    """Write the shards ``todo`` of ``plan`` (each tar, then its state marker) in the Ray session of
    the caller: on ``pool`` (started ahead by the caller, who closes it), else as tasks
    (``shards_on_tasks``) or on an actor pool made here; returns their small states. Also the
    repair's way to rewrite a damaged shard (pipelines/repair.py): the same rows give the same
    bytes, whichever way they are written."""
    if not todo:
        return {}
    states: dict[str, dict[str, Any]] = {}
    spans = plan.spans
    # Largest shards first (shards are grouped by bucket, so their sizes differ): the phase ends
    # with small ones and no core waits long on the last big shard (docs/scale.md). Bytes per shard
    # do not depend on the order.
    todo = sorted(todo, key=lambda shard: (-spans[shard][1], shard))
    # only the shards in flight become Python rows (PlanReader reads their row groups)
    if pool is None and shards_on_tasks(req):
        done = _shard_tasks(req, layout, plan, todo)
    else:
        done = _shard_calls(req, layout, plan, todo, pool)
    for shard, state in done:
        if req.trace is not None:
            req.trace.unit("materialize", state.get("timing"))
        states[shard] = small_state(state)
        if progress is not None:
            progress.update(spans[shard][1])
    return states


def _shard_tasks(
    req: BuildRequest, layout: Layout, plan: PlanReader, todo: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each shard a one-CPU task, as many at once as the pool would have actors (one per CPU, or
    ``[materialize] actors``), handed out in ``todo``'s order as each ends: no shard waits queued
    behind another while a core runs dry, as with the actors."""
    from ..distribute import map_tasks, pool_shape
    from ..tasks import MaterializeSettings, shard_task

    shape = pool_shape(req.config.materialize, len(todo))
    shared = {"layout": layout, "settings": MaterializeSettings.from_config(req.config, "cpu", req.storage)}
    tasks = map_tasks(shard_task, todo, shared=shared, window=shape.actors, args=lambda s: (plan.rows(s),))
    for i, state in tasks:
        yield todo[i], state


def _shard_calls(
    req: BuildRequest, layout: Layout, plan: PlanReader, todo: list[str], pool: ActorPool | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each shard a call on a ShardMaterializer actor of ``pool`` (or of one made here and closed)."""
    with nullcontext(pool) if pool is not None else _materializer_pool(req, layout, len(todo)) as workers:
        yield from workers.map(todo, "materialize", lambda shard: (plan.rows(shard),))
        if workers.lost:
            log(req, f"materialize: {workers.lost} actor(s) lost; their shards were redone on the others")
