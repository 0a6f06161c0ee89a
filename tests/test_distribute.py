"""pipelines.distribute on the session's Ray: lost actors hand their work on; nothing waits forever."""

from __future__ import annotations

import os

import pytest

from pipelines.distribute import ActorPool, DistributeError, map_tasks


def _square(x: int, offset: int) -> int:
    return x * x + offset


class _Worker:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def work(self, x: int) -> tuple[int, int]:
        if x == 3 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # the process dies, as it does with its node
        return x, os.getpid()


def test_map_tasks_returns_every_result(ray_cluster):
    results = dict(map_tasks(_square, list(range(10)), shared={"offset": 1}, window=3))
    assert results == {i: i * i + 1 for i in range(10)}


def test_a_dead_actor_hands_its_items_to_the_living(ray_cluster, tmp_path):
    import ray

    cls = ray.remote(_Worker).options(num_cpus=0.1, max_restarts=0, max_task_retries=0)
    marker = str(tmp_path / "died")
    with ActorPool(lambda: cls.remote(marker), 2, per_actor=2, start_timeout=60) as pool:
        done = dict(pool.map(list(range(8)), lambda actor, x: actor.work.remote(x)))
    assert os.path.exists(marker), "no actor died: the test did not test anything"
    assert sorted(done) == list(range(8)) and all(v[0] == k for k, v in done.items())
    assert pool.lost == 1


def test_an_actor_that_cannot_start_is_an_error_not_a_hang(ray_cluster):
    import ray

    cls = ray.remote(_Worker).options(num_cpus=10_000, max_restarts=0)  # no node has that many
    with ActorPool(lambda: cls.remote("unused"), 1, start_timeout=3) as pool:
        with pytest.raises(DistributeError, match="no actor could start"):
            list(pool.map([1, 2], lambda actor, x: actor.work.remote(x)))
