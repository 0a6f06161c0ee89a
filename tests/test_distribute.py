"""pipelines.distribute on the session's Ray: lost actors hand their work on; nothing waits forever."""

from __future__ import annotations

import os
import time

import pytest

from pipelines.config import PoolConfig, ScoringConfig
from pipelines.distribute import ActorPool, DistributeError, map_tasks, pool_shape
from pipelines.scoring import SCORER_CPU_SHARE


def _square(x: int, offset: int) -> int:
    return x * x + offset


class _Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int, plus: int) -> int:
        return x * self.factor + plus


class _Worker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def work(self, x: int) -> tuple[int, int]:
        if x == 3 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # the process dies, as it does with its node
        return x, os.getpid()


class _Born:
    def __init__(self) -> None:
        self.born = time.time()

    def who(self, x: int) -> tuple[int, float]:
        return os.getpid(), self.born


def test_map_tasks_returns_every_result(ray_cluster):
    results = dict(map_tasks(_square, list(range(10)), shared={"offset": 1}, window=3))
    assert results == {i: i * i + 1 for i in range(10)}


def test_a_dead_actor_hands_its_items_to_the_living(ray_cluster, tmp_path):
    import ray

    cls = ray.remote(_Worker).options(num_cpus=0.1, max_restarts=0, max_task_retries=0)
    marker = str(tmp_path / "died")
    with ActorPool(lambda: cls.remote(marker), 2, per_actor=2, start_timeout=60) as pool:
        done = dict(pool.map(list(range(8)), "work"))
    assert os.path.exists(marker), "no actor died: the test did not test anything"
    assert sorted(done) == list(range(8)) and all(v[0] == k for k, v in done.items())
    assert pool.lost == 1


def test_an_actor_that_cannot_start_is_an_error_not_a_hang(ray_cluster):
    import ray

    cls = ray.remote(_Worker).options(num_cpus=10_000, max_restarts=0)  # no node has that many
    with ActorPool(lambda: cls.remote("unused"), 1, start_timeout=3) as pool:
        with pytest.raises(DistributeError, match="no actor could start"):
            list(pool.map([1, 2], "work"))


def test_one_pool_shape_for_extractor_and_scorer_actors():
    """[materialize] and [scoring] are one PoolConfig shape: GPU shares when the cluster has GPUs,
    one CPU each otherwise (the scorers half of them: the other half decodes), never more actors
    than CPUs or units of work."""
    mat = PoolConfig()
    assert pool_shape(mat, 100, {"CPU": 8.0}) == (8, {"num_cpus": 1}, "cpu")
    assert pool_shape(mat, 3, {"CPU": 8.0}).actors == 3  # no idle actors
    assert pool_shape(mat, 100, {"CPU": 16.0, "GPU": 2.0}) == (8, {"num_cpus": 1, "num_gpus": 0.25}, "cuda")
    assert pool_shape(PoolConfig(actors=3, gpu_share=0.5), 100, {"CPU": 16.0, "GPU": 1.0}).actors == 3
    assert pool_shape(mat, 100, {"CPU": 2.0, "GPU": 1.0}).actors == 2  # one CPU per actor
    scoring = ScoringConfig(gpu_share=0.5)
    half = {"cpu_share": SCORER_CPU_SHARE}
    assert pool_shape(scoring, 100, {"CPU": 16, "GPU": 2}, **half) == (
        4,
        {"num_cpus": 1, "num_gpus": 0.5},
        "cuda",
    )
    assert pool_shape(scoring, 3, {"CPU": 16, "GPU": 2}, **half).actors == 3
    assert pool_shape(scoring, 100, {"CPU": 16}, **half) == (
        8,
        {"num_cpus": 1},
        "cpu",
    )  # half the CPUs decode
    assert pool_shape(scoring, 100, {"CPU": 1}, **half) == (1, {"num_cpus": 1}, "cpu")
    fixed = ScoringConfig(actors=2)
    assert pool_shape(fixed, 100, {"CPU": 16, "GPU": 1}, **half) == (
        2,
        {"num_cpus": 1, "num_gpus": 0.25},
        "cuda",
    )


def test_an_actor_pool_of_a_plain_class_maps_by_method_name(ray_cluster):
    from pipelines.distribute import actor_pool

    shape = pool_shape(PoolConfig(actors=2), 4, {"CPU": 2.0})
    with actor_pool(_Scaler, (10,), shape, per_actor=1) as pool:
        got = dict(pool.map([1, 2, 3, 4], "scale", lambda x: (x, 1)))
    assert got == {1: 11, 2: 21, 3: 31, 4: 41}


def test_a_pool_started_ahead_of_work_uses_its_actors_and_kills_the_extra(ray_cluster):
    """``start`` creates the actors before any work (the build starts its materializers while it
    plans); ``map`` hands work to them, one actor per item at most: the extra actor is killed."""
    import ray
    from ray.exceptions import RayActorError

    cls = ray.remote(_Born).options(num_cpus=0.1, max_restarts=0, max_task_retries=0)
    with ActorPool(lambda: cls.remote(), 3, per_actor=1, start_timeout=1) as pool:
        pool.start()
        handles = dict(pool.actors)
        assert len(handles) == 3
        ray.get([a.__ray_ready__.remote() for a in handles.values()])  # all three started
        time.sleep(1.5)  # past start_timeout (a long plan): started actors are not given up
        asked = time.time()
        got = dict(pool.map([1, 2], "who"))
        assert sorted(got) == [1, 2]
        assert all(born < asked for _, born in got.values()), "the work went to actors made after the ask"
        assert pool.spawned == 3 and len(pool.actors) == 2  # no new actor; one per item
        (extra,) = set(handles) - set(pool.actors)
        with pytest.raises(RayActorError):
            ray.get(handles[extra].__ray_ready__.remote(), timeout=30)


def test_a_pool_started_ahead_leaves_a_cpu_for_the_callers_tasks(ray_cluster):
    """The resume hang of issue 21: a build resumed mid-materialize started its pool (one actor per
    CPU, each holding its CPU for life) and then hashed its written shards on Ray tasks, which waited
    for a CPU forever. Actors started ahead of work leave one CPU free; ``map`` makes the rest."""
    import ray

    from pipelines.distribute import PoolShape, actor_pool, cluster_cpus

    cpus = cluster_cpus()
    shape = PoolShape(cpus, {"num_cpus": 1}, "cpu")
    with actor_pool(_Scaler, (10,), shape, per_actor=1) as pool:
        pool.start()
        assert len(pool.actors) == cpus - 1
        ray.get([a.__ray_ready__.remote() for a in pool.actors.values()], timeout=60)
        task = ray.remote(_square).options(num_cpus=1).remote(3, offset=1)
        assert ray.get(task, timeout=60) == 10  # runs beside the started actors, does not wait on them
        got = dict(pool.map(list(range(cpus)), "scale", lambda x: (x, 0)))
        assert got == {x: 10 * x for x in range(cpus)}
        assert len(pool.actors) == cpus  # the last actor was made when the work came


def test_every_materialize_actor_starts_at_the_plan_only_when_no_ray_task_comes_before_the_shards(tmp_path):
    """``no_tasks_before_materialize``: a fresh build's pool may take every CPU while the plan runs;
    not once a shard state is written (a resume hashes written shards on Ray tasks, which would
    wait forever for a CPU: the hang of issue 21), not for an increment, nor above the dedup's Ray
    threshold (the near-duplicate search then runs as Ray tasks)."""
    import dataclasses

    from curation.dedup import DedupConfig
    from pipelines.build.base import Base
    from pipelines.build.request import APPEND, FRESH, BuildRequest
    from pipelines.build.run import no_tasks_before_materialize
    from pipelines.config import BuildConfig
    from sharding.layout import Layout

    layout = Layout(str(tmp_path / "out"))
    layout.ensure_root()
    req = BuildRequest([], layout.out, BuildConfig())
    work = {"inputs": 615}
    assert no_tasks_before_materialize(req, layout, Base(FRESH), work)
    low = dataclasses.replace(BuildConfig(), dedup=DedupConfig(ray_threshold=600))
    assert not no_tasks_before_materialize(BuildRequest([], layout.out, low), layout, Base(FRESH), work)
    layout.write_json(layout.shard_state("shards/000000.tar"), {"stats": {}})
    assert not no_tasks_before_materialize(req, layout, Base(FRESH), work)
    assert not no_tasks_before_materialize(req, Layout(str(tmp_path / "other")), Base(APPEND, object()), work)
