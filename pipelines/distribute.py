"""The one place that hands work to Ray: bounded task windows, actor pools that survive losses, the
scan's Ray Data stage, and the one pool shape every actor pool takes (with ``raycluster``, which
starts or joins the cluster, and ``raytrain``, the W-net on Ray Train, the only modules that import Ray).

Ray re-runs a task whose worker or node died (``max_retries``), and this loop resubmits one whose
retries ran out. Actors are different: an actor lost with its node, restarted by Ray, waits for
resources the surviving actors hold, and the build hangs (issue 11). So pool actors never restart:
when one dies, or cannot start within ``start_timeout``, the items it held go back to the queue and
the living actors take them; work is only handed to actors that have started. Every ``ray.wait``
has a timeout, so a lost unit is noticed, never waited on forever.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from .config import PoolConfig

POLL_S = 1.0  # ray.wait timeout: how often the loops look at lost actors and start deadlines
ATTEMPTS = 4  # times one unit is handed out before the build gives up on it
START_TIMEOUT_S = 300.0  # an actor not started by then is given up (its resources may never free)


class DistributeError(RuntimeError):
    """Work could not be placed or kept failing on lost workers; the message says which and why."""


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Errors meaning "the worker, actor or node went away", not "the code failed"."""
    from ray import exceptions as rx

    return (
        rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OwnerDiedError,
        rx.TaskUnschedulableError, rx.ActorUnschedulableError, rx.LocalRayletDiedError,
    )  # fmt: skip


def ray_is_up() -> bool:
    """Whether this process is in a Ray session (else work stays on the driver)."""
    import ray

    return ray.is_initialized()


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


def cluster_cpus() -> int:
    return max(1, int(cluster_resources().get("CPU", 1)))


def cluster_nodes() -> int:
    """How many nodes of the cluster are alive."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


class PoolShape(NamedTuple):
    """How many actors, the Ray resources each asks for, and the device their models run on."""

    actors: int
    options: dict[str, Any]
    device: str


def pool_shape(
    pool: PoolConfig, units: int, resources: Mapping[str, float] | None = None, *, cpu_share: float = 1.0
) -> PoolShape:
    """The one shape of an actor pool: GPU shares when the cluster has GPUs (``pool.gpu_share`` each,
    one per share by default), else one CPU each (``cpu_share`` of the CPUs by default); never more
    actors than CPUs (each takes one) or than ``units`` of work (no idle actors)."""
    resources = cluster_resources() if resources is None else resources
    cpus = max(1, int(resources.get("CPU", 1)))
    if resources.get("GPU", 0) > 0:
        n = pool.actors or max(1, int(resources["GPU"] / pool.gpu_share))
        options, device = {"num_cpus": 1, "num_gpus": pool.gpu_share}, "cuda"
    else:
        n = pool.actors or max(1, int(cpus * cpu_share))
        options, device = {"num_cpus": 1}, "cpu"
    return PoolShape(max(1, min(n, cpus, units)), options, device)


def map_tasks(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *,
    shared: dict[str, Any] | None = None,
    num_cpus: float = 1,
    window: int | None = None,
    attempts: int = ATTEMPTS,
    on_free: Callable[[int], None] | None = None,
    args: Callable[[Any], tuple] | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run ``fn(item, **shared)`` for every item as a Ray task; yield ``(index, result)`` as each ends.

    ``shared`` values go to the object store once (held by the driver's node, so they outlive any
    worker). At most ``window`` tasks are in flight (default: two per CPU of the cluster); they are
    handed out in the items' order. ``args``: ``fn(*args(item), **shared)`` instead, ``args`` run when
    the item is handed out (and for the next one while the window is full), so only the items in
    flight are built. Once every item is handed out, ``on_free(n)`` is told the ``n`` CPUs of the
    cluster that no task of this map holds or waits for (the tail: the build starts its materialize
    actors there).
    """
    import ray

    lost = _lost_errors()
    refs = {k: ray.put(v) for k, v in (shared or {}).items()}
    remote = ray.remote(fn).options(num_cpus=num_cpus, max_retries=attempts)
    build = args or (lambda item: (item,))
    cpus = cluster_cpus()
    window = window or 2 * cpus
    pending = deque(range(len(items)))
    tries: Counter[int] = Counter()
    in_flight: dict[Any, int] = {}
    prepared: dict[int, tuple] = {}  # the next item's arguments, built while the window is full
    while pending or in_flight:
        while pending and len(in_flight) < window:
            i = pending.popleft()
            tries[i] += 1
            call = prepared.pop(i) if i in prepared else build(items[i])
            in_flight[remote.remote(*call, **refs)] = i
        if args is not None and pending and pending[0] not in prepared:
            prepared = {pending[0]: build(items[pending[0]])}
        if on_free is not None and not pending and len(in_flight) < cpus:
            on_free(cpus - len(in_flight))
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
        for ref in done:
            i = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except lost as exc:
                if tries[i] >= attempts:
                    raise DistributeError(f"unit {i} was lost {tries[i]} times; last: {_why(exc)}") from None
                pending.appendleft(i)
                continue
            yield i, result


class ActorPool:
    """Up to ``size`` actors from ``factory``, ``per_actor`` calls queued on each, replaced when lost.

    ``per_actor=1`` hands an item to an actor only when it is idle, so the items go to the actors in
    their order as each frees (a long item queued behind another on one actor, while the others
    run dry, was a build's tail: docs/scale.md); the next item's arguments are built ahead, so an
    actor waits one round trip between items.

    ``factory()`` returns a new actor handle (created with ``max_restarts=0``: restarts are ours).
    ``ahead``: how many actors ``start``/``grow`` may create before ``map`` (default ``size``).
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        size: int,
        *,
        per_actor: int = 1,
        start_timeout: float = START_TIMEOUT_S,
        attempts: int = ATTEMPTS,
        ahead: int | None = None,
    ) -> None:
        self.factory, self.size, self.per_actor = factory, max(1, size), max(1, per_actor)
        self.ahead = self.size if ahead is None else max(0, ahead)
        self.start_timeout, self.attempts = start_timeout, attempts
        self.actors: dict[int, Any] = {}
        self.born: dict[int, float] = {}
        self.ready: set[int] = set()
        self.load: Counter[int] = Counter()
        self.spawned = 0
        self.lost = 0
        self._ready_refs: dict[Any, int] = {}  # an actor's start signal -> the actor

    def _spawn(self) -> None:
        n = self.spawned
        self.spawned += 1
        self.actors[n] = self.factory()
        self.born[n] = time.monotonic()
        self._ready_refs[self.actors[n].__ray_ready__.remote()] = n

    def _drop(self, n: int) -> None:
        import ray

        actor = self.actors.pop(n, None)
        self.ready.discard(n)
        self.born.pop(n, None)
        for ref, owner in list(self._ready_refs.items()):
            if owner == n:
                del self._ready_refs[ref]
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def start(self, every_cpu: bool = False) -> ActorPool:
        """Create the actors now, ahead of work (at most ``ahead``): each starts (loads its models)
        while the caller does something else; ``map`` then hands work to them as they become ready
        and creates the rest. ``every_cpu``: the caller runs no Ray task of its own before ``map``,
        so the whole pool may start (``ahead`` keeps a CPU for such tasks otherwise)."""
        if every_cpu:
            self.ahead = self.size
        return self.grow(self.size)

    def grow(self, actors: int) -> ActorPool:
        """Create actors ahead of work until the pool has ``actors`` (at most ``ahead``)."""
        while len(self.actors) < min(self.size, self.ahead, actors):
            self._spawn()
        return self

    def _fit(self, units: int) -> None:
        """At most one actor per unit of work: spawn the missing, kill the extra (those not yet
        started first) so their CPUs/GPUs go back."""
        self.size = min(self.size, max(1, units))
        while len(self.actors) < self.size:
            self._spawn()
        extra = sorted(self.actors, key=lambda n: (n in self.ready, -n))[: len(self.actors) - self.size]
        for n in extra:
            self._drop(n)

    def map(
        self, items: Sequence[Any], method: str, args: Callable[[Any], tuple] = lambda item: (item,)
    ) -> Iterator[tuple[Any, Any]]:
        """Yield ``(item, result)`` of the actors' ``method(*args(item))`` for every item, as each ends
        (``args`` runs when the item is handed out: only the items in flight are built). Uses the
        actors already started (``start``), at most one per item."""
        import ray

        lost = _lost_errors()
        queue = deque(items)
        tries: Counter[Any] = Counter()
        in_flight: dict[Any, tuple[Any, int]] = {}
        prepared: dict[Any, tuple] = {}  # the next item's arguments, built while the actors work
        if items:
            self._fit(len(items))
        while queue or in_flight:
            for n in sorted(self.ready, key=lambda a: self.load[a]):
                while queue and self.load[n] < self.per_actor:
                    item = queue.popleft()
                    tries[item] += 1
                    call = prepared.pop(item) if item in prepared else args(item)
                    in_flight[getattr(self.actors[n], method).remote(*call)] = (item, n)
                    self.load[n] += 1
            if queue and queue[0] not in prepared:
                prepared = {queue[0]: args(queue[0])}
            waiting = list(in_flight) + list(self._ready_refs)
            done, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S) if waiting else ([], [])
            for ref in done:
                if ref in self._ready_refs:
                    n = self._ready_refs.pop(ref)
                    try:
                        ray.get(ref)
                        if n in self.actors:
                            self.ready.add(n)
                    except lost:
                        self._lose(n, in_flight, queue)
                    continue
                item, n = in_flight.pop(ref)
                self.load[n] -= 1
                try:
                    result = ray.get(ref)
                except lost as exc:
                    queue.appendleft(item)
                    if tries[item] >= self.attempts:
                        raise DistributeError(
                            f"{item} was lost {tries[item]} times; last: {_why(exc)}"
                        ) from None
                    self._lose(n, in_flight, queue)
                    continue
                yield item, result
            self._expire_unstarted(in_flight, queue)

    def _lose(self, n: int, in_flight: dict[Any, tuple[Any, int]], queue: deque) -> None:
        """Actor ``n`` is gone: requeue what it held and start a replacement (used if it can start)."""
        if n not in self.actors:
            return
        self.lost += 1
        for ref, (item, owner) in list(in_flight.items()):
            if owner == n:
                del in_flight[ref]
                queue.appendleft(item)
        self.load[n] = 0
        self._drop(n)
        if self.spawned < self.size * self.attempts:
            self._spawn()

    def _expire_unstarted(self, in_flight: dict[Any, tuple[Any, int]], queue: deque) -> None:
        import ray

        now = time.monotonic()
        late = [
            ref
            for ref, n in self._ready_refs.items()
            if n in self.actors and now - self.born[n] > self.start_timeout
        ]
        # a pool started ahead of work (``start``) may have actors that started long ago and whose
        # signal is not yet read: only the ones still not started are given up
        started, _ = ray.wait(late, num_returns=len(late), timeout=0) if late else ([], [])
        for ref in set(late) - set(started):
            self._drop(self._ready_refs[ref])  # its resources are held by others or absent: give it up
        if not self.actors and (queue or in_flight):
            raise DistributeError(
                f"no actor could start within {self.start_timeout:.0f} s ({self.lost} lost); "
                "the cluster lacks the resources they ask for"
            )

    def close(self) -> None:
        """Kill every actor now: their CPUs/GPUs go back at once, not at ray.shutdown."""
        for n in list(self.actors):
            self._drop(n)

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def actor_pool(cls: type, args: tuple, shape: PoolShape, *, per_actor: int = 1) -> ActorPool:
    """A pool of ``shape.actors`` actors of class ``cls`` built with ``cls(*args)``. No Ray restarts:
    the pool replaces a lost actor and hands its items to the living.

    Actors started ahead of work (``ActorPool.start``) leave one CPU of the cluster free: an idle
    actor holds its CPU for life, and the caller's own tasks before ``map`` (a resumed build hashes
    its written shards on Ray tasks) would otherwise wait for it forever."""
    import ray

    remote = ray.remote(cls).options(max_restarts=0, max_task_retries=0, **shape.options)
    ahead = (cluster_cpus() - 1) // max(1, int(shape.options.get("num_cpus", 1)))
    return ActorPool(lambda: remote.remote(*args), shape.actors, per_actor=per_actor, ahead=ahead)


def tasks_then_actors(
    items: list[dict[str, Any]],
    task: Callable[..., dict[str, Any]],
    task_kwargs: dict[str, Any],
    actor: type,
    actor_kwargs: dict[str, Any],
    shape: PoolShape,
) -> Iterator[dict[str, Any]]:
    """A Ray Data stream: ``task(item, **task_kwargs)`` as one-CPU tasks, then each result through a
    pool of ``actor(**actor_kwargs)`` (called on a numpy batch of one); yields the actors' rows as
    they finish. Streaming: only the items in flight are held."""
    import ray.data

    from .raycluster import quiet_ray_data

    quiet_ray_data()
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(task, fn_kwargs=task_kwargs, num_cpus=1)
    ds = ds.map_batches(
        actor, fn_constructor_kwargs=actor_kwargs, batch_size=1, batch_format="numpy",
        concurrency=shape.actors, **shape.options,
    )  # fmt: skip
    yield from ds.iter_rows()


def _why(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


__all__ = [
    "ActorPool", "DistributeError", "PoolShape", "actor_pool", "cluster_cpus", "cluster_nodes", "cluster_resources", "map_tasks",
    "pool_shape", "ray_is_up", "tasks_then_actors",
]  # fmt: skip
