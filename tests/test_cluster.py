"""Many nodes, and losing one: a real multi-node Ray (``ray.cluster_utils.Cluster``: a head and two
worker nodes, each its own raylet with one CPU) runs ``linepairs build --address``.

A worker node removed (SIGKILL, no grace) mid-scan or mid-materialize (shards as tasks, and on
actors): the build notices the lost tasks and actors, hands their units to the living, and
finishes with the same manifest rows and shard sha256s as the uninterrupted build, well within a
deadline (it used to hang for good).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from .helpers import REPO, write_config

CONFIG = "[scan]\nchunk_size = 1\n[shards]\nsamples_per_shard = 1\n"
INPUTS = 12
DEADLINE_S = 400  # a build that hangs fails here instead of blocking the suite


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # Fast node-death detection: the test removes nodes on purpose.
    system = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 1000,
        "health_check_failure_threshold": 3,
    }
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": system},
    )
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    try:
        yield c, workers
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def source(corpus, tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("cluster")
    src = base / "src"
    src.mkdir()
    names = sorted(n for n in os.listdir(corpus) if n.endswith(".jpg"))[:INPUTS]
    for name in names:
        shutil.copy(os.path.join(corpus, name), src / name)  # links leaving a source are refused
    return str(src), write_config(str(base / "cfg.toml"), CONFIG)


def _build(src: str, cfg: str, out: str, address: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "build",
        src,
        "--out",
        out,
        "--config",
        cfg,
        "--address",
        address,
        "-q",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _finish(proc: subprocess.Popen) -> None:
    try:
        _, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the build made no progress for {DEADLINE_S} s after losing a node")
    assert proc.returncode == 0, err[-3000:]


def _result(out: str) -> tuple[list[dict], list[tuple[str, str]]]:
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    shards = json.load(open(os.path.join(out, "shards.json")))["shards"]
    return manifest, [(s["path"], s["sha256"]) for s in shards]


@pytest.fixture(scope="module")
def learned(source, shared) -> str:
    """The config of a build whose extractor is a learned network, so its shards are written on
    actors (classical ones are Ray tasks: pipelines/build/materialize.py)."""
    src, cfg = source
    weights = os.path.join(shared, "weights", "pidinet", "table5_pidinet-tiny.pth")
    extractors = f'[[extractors]]\nname = "pidinet"\nweights = "{weights}"\n'
    return write_config(os.path.join(os.path.dirname(cfg), "learned.toml"), CONFIG + extractors)


@pytest.fixture(scope="module")
def references(cluster, source, learned, tmp_path_factory):
    """The uninterrupted builds on all three nodes, classical (shard tasks) and learned (actors)."""
    c, _ = cluster
    results = {}
    for kind, cfg in (("classical", source[1]), ("learned", learned)):
        out = str(tmp_path_factory.mktemp("cluster_ref") / kind)
        proc = _build(source[0], cfg, out, c.address)
        _finish(proc)
        results[kind] = _result(out)
    return results


@pytest.mark.parametrize(
    "phase, marker, extractors",
    [
        ("scan", "scan/part-*.parquet", "classical"),
        ("materialize", "_state/shards/*.json", "classical"),  # the shards are Ray tasks
        ("materialize", "_state/shards/*.json", "learned"),  # the shards are calls on actors
    ],
)
def test_losing_a_worker_node_mid_phase_still_completes_identically(
    cluster, source, learned, references, tmp_path, phase, marker, extractors
):
    c, workers = cluster
    out = str(tmp_path / "out")
    proc = _build(source[0], learned if extractors == "learned" else source[1], out, c.address)
    deadline = time.monotonic() + 240
    while not glob.glob(os.path.join(out, marker)):
        assert proc.poll() is None, f"build ended before the kill point: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.02)
    victim = workers.pop(0)
    c.remove_node(victim, allow_graceful=False)
    done_at_loss = len(glob.glob(os.path.join(out, marker)))
    _finish(proc)
    assert done_at_loss < INPUTS, f"the node was removed only after the {phase} had finished"
    assert _result(out) == references[extractors]
    workers.append(c.add_node(num_cpus=1))  # back to three nodes for the next case
    c.wait_for_nodes()
