"""A build SIGKILLed in any phase resumes to the same manifest rows and byte-identical shards."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal

import pyarrow.parquet as pq
import pytest

from .helpers import cli, kill_when, popen_build, write_config

# One shard per sample and one input per scan chunk: many small units, so a kill lands mid-phase.
CONFIG = "[scan]\nchunk_size = 1\n[shards]\nsamples_per_shard = 1\n"


def _result(out: str) -> tuple[list[dict], dict]:
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    shards = json.load(open(os.path.join(out, "shards.json")))
    return manifest, shards


@pytest.fixture(scope="module")
def reference(corpus, ray_cluster, tmp_path_factory):
    """An uninterrupted build of a few real images."""
    base = tmp_path_factory.mktemp("resume")
    src = base / "src"
    src.mkdir()
    for name in ("anime2sketch_001.jpg", "sketchkeras_002.jpg", "style2paints_004.jpg", "style2paints_006.jpg",
                 "paintsundo_003.jpg", "style2paints_012.jpg", "danbooregion_004.jpg", "style2paints_021.png"):  # fmt: skip
        shutil.copy(os.path.join(corpus, name), src / name)  # copies: links leaving a source are not read
    cfg = write_config(str(base / "cfg.toml"), CONFIG)
    out = str(base / "reference")
    res = cli("build", str(src), "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    return str(src), cfg, _result(out)


@pytest.mark.parametrize(
    "phase, marker",
    [
        ("scan", "scan/part-*.parquet"),
        ("materialize", "_state/shards/*.json"),
    ],
)
def test_sigkill_then_resume_is_identical(reference, ray_cluster, tmp_path, phase, marker):
    src, cfg, (ref_manifest, ref_shards) = reference
    out = str(tmp_path / "out")
    proc = popen_build(src, "--out", out, "--config", cfg, address=ray_cluster)
    kill_when(proc, lambda: glob.glob(os.path.join(out, marker)), 120)
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "build.json")), (
        f"the build finished before the kill in {phase}"
    )
    res = cli("build", src, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    manifest, shards = _result(out)
    assert manifest == ref_manifest
    assert shards == ref_shards  # same paths, sizes and sha256: byte-identical tars
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)
    assert cli("verify", out).returncode == 0


def test_resume_from_crash_leftovers(reference, ray_cluster, tmp_path):
    """States a kill can leave: no build.json, a shard renamed but its state unwritten, a temp file."""
    src, cfg, (ref_manifest, ref_shards) = reference
    out = str(tmp_path / "out")
    assert cli("build", src, "--out", out, "--config", cfg, address=ray_cluster).returncode == 0
    # a kill before the commit: neither build.json nor its committed copy (repairs: test_hostile_append)
    for name in ("build.json", "_state/build.json", "manifest.parquet", "shards.json", "rejects.parquet"):
        os.remove(os.path.join(out, name))
    states = sorted(glob.glob(os.path.join(out, "_state", "shards", "*.json")))
    os.remove(states[0])
    tar = os.path.join(out, ref_shards["shards"][1]["path"])
    with open(tar, "r+b") as fh:  # a stale shard whose size no longer matches its state
        fh.truncate(100)
    with open(tar + ".tmp-999-deadbeef", "wb") as fh:
        fh.write(b"half a tar")
    res = cli("build", src, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    assert _result(out) == (ref_manifest, ref_shards)
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)


TEARDOWN_FAULT = """
import faulthandler, sys
import ray
ray.shutdown = lambda *args, **kwargs: faulthandler._sigsegv()  # the driver's disconnect faults
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_fault_in_rays_teardown_leaves_a_finished_build(reference, ray_cluster, tmp_path):
    """The build is written before the driver leaves Ray: a native fault in Ray's teardown (a CI
    build once exited -11 after its last shard) costs the exit status, never the manifest; the
    terminal is told, and a re-run finds the build complete."""
    import subprocess
    import sys

    from .helpers import REPO

    src, cfg, reference_result = reference
    out = str(tmp_path / "out")
    args = ["build", src, "--out", out, "--config", cfg, "--address", ray_cluster]
    res = subprocess.run([sys.executable, "-c", TEARDOWN_FAULT, *args], capture_output=True, text=True,
                         cwd=REPO, timeout=300)  # fmt: skip
    assert res.returncode == -signal.SIGSEGV, (res.returncode, res.stderr)
    assert "Fatal Python error: Segmentation fault" in res.stderr
    assert _result(out) == reference_result
    assert cli("verify", out).returncode == 0
    again = cli("build", src, "--out", out, "--config", cfg, address=ray_cluster)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr


def test_shards_written_on_actors_are_byte_identical_to_shard_tasks(reference, ray_cluster, tmp_path):
    """A classical build writes its shards as Ray tasks (pipelines/build/materialize.py); the same
    plan written on ShardMaterializer actors (the learned extractors' way) gives the same bytes."""
    from curation.sources import parse_source
    from pipelines.build.materialize import _materializer_pool, shards_on_tasks, write_shards
    from pipelines.build.plan import PlanReader
    from pipelines.build.request import BuildRequest
    from pipelines.config import load_config
    from sharding.layout import Layout

    src, cfg, (_, ref_shards) = reference
    out = str(tmp_path / "out")
    assert cli("build", src, "--out", out, "--config", cfg, address=ray_cluster).returncode == 0
    built = Layout(out)
    again = Layout(str(tmp_path / "again"))
    again.ensure_root()
    req = BuildRequest([parse_source(src)], again.out, load_config(cfg), show_progress=False)
    assert shards_on_tasks(req)  # so the build above wrote them as tasks
    plan = PlanReader(built, built.plan)
    todo = sorted(plan.spans)
    with _materializer_pool(req, again, len(todo)) as pool:
        states = write_shards(req, again, plan, todo, pool=pool.start(every_cpu=True))
    assert len(states) == len(todo) == len(ref_shards["shards"]) > 1
    for shard in ref_shards["shards"]:
        with open(os.path.join(again.out, shard["path"]), "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == shard["sha256"], shard["path"]
