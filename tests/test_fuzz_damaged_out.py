"""Fuzz over damaged OUT files: every table, record, weight file, marker and a shard of a build
with an append is truncated, flipped, deleted or swapped with another file, one at a time.

For each case: ``verify`` names the file (or finds nothing wrong only where the file is private and
readers never need it), the loader, ``audit`` and ``reweight`` either work or raise their one-line
error, nothing hangs (an alarm per case), and a re-run of the build command either brings every file
of OUT back byte for byte or stops with one line: no traceback, no hang, no silent loss.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal

import pytest

from curation.weighting import WeightError
from pipelines.cli import main
from pipelines.tools.reweight import ReweightRefused, reweight
from sharding.layout import StorageError
from sharding.loader import LoaderError, load_population
from sharding.verify import verify_build
from sharding.weights import WeightsVersionError

from .helpers import THREE_IMAGES, cli, corpus_folder, files_of, write_config

IMAGES = THREE_IMAGES
NEW = ("style2paints_006.jpg",)
CONFIG = "[shards]\nsamples_per_shard = 1\n[dedup]\nenabled = false\n[filters]\nmin_tags = 0\n"
# Files every reader relies on (verify must name them when damaged); the private ones only the
# re-run needs (it must still repair them).
PUBLIC = ("build.json", "manifest.parquet", "rejects.parquet", "shards.json", "plan.parquet", "README.md",
          "weights/v1.parquet", "weights/active.json", "_state/build.json", "SHARD", "STATE")  # fmt: skip
PRIVATE = ("_state/request.json",)
DAMAGES = ("truncate", "flip", "delete", "swap")
CASE_SECONDS = 240  # a hang is a failure, not a stuck suite


@pytest.fixture(scope="module")
def built(corpus, ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-out")
    src, new = corpus_folder(corpus, root / "src", IMAGES), corpus_folder(corpus, root / "new", NEW)
    cfg = write_config(str(root / "c.toml"), CONFIG)
    out = str(root / "out")
    assert cli("build", str(src), "--out", out, "--config", cfg, "-q", address=ray_cluster).returncode == 0
    res = cli(
        "build", str(src), f"more={new}", "--out", out, "--config", cfg, "--append", "-q", address=ray_cluster
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return {"src": str(src), "cfg": cfg, "out": out, "files": files_of(out)}


def target(out: str, name: str) -> str:
    """The relative path behind a case name (SHARD: an appended shard, STATE: an old shard's marker)."""
    build = json.load(open(os.path.join(out, "build.json")))
    if name == "SHARD":
        return build["appends"][0]["shards"][0]
    if name == "STATE":
        shards = sorted(os.listdir(os.path.join(out, "_state", "shards")))
        return os.path.join("_state", "shards", shards[0])
    return name


def damage(out: str, rel: str, how: str, rng: random.Random) -> None:
    path = os.path.join(out, rel)
    data = open(path, "rb").read()
    if how == "delete":
        os.remove(path)
        return
    if how == "truncate":
        data = data[: rng.randrange(len(data))]
    elif how == "flip":
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    else:  # swap: another file of OUT's bytes in its place
        others = sorted(p for p in files_of(out) if p != rel and not p.startswith("_state/increments"))
        data = open(os.path.join(out, rng.choice(others)), "rb").read()
    with open(path, "wb") as fh:
        fh.write(data)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a case took more than {CASE_SECONDS} s")


CASES = [(name, how) for name in PUBLIC + PRIVATE for how in DAMAGES]


@pytest.mark.parametrize("name, how", CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_damaged_out_file(built, tmp_path, capsys, name, how):
    rng = random.Random(f"{name}-{how}")
    out = str(tmp_path / "out")
    shutil.copytree(built["out"], out)
    rel = target(out, name)
    damage(out, rel, how, rng)
    if files_of(out) == built["files"]:
        pytest.skip("this damage left the bytes as they were (a swap with an identical file)")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        # verify: the damaged file is named (public files); never an exception
        faults = verify_build(out)
        if name in PUBLIC:
            shown = rel if name != "STATE" else rel.rsplit("/", 1)[-1][: -len(".json")].replace("__", "/")
            assert any(shown in f or rel in f for f in faults), (rel, how, faults)
        # the readers: they work (on what is intact) or say one line of their own
        try:
            load_population(out)
        except LoaderError:
            pass
        other = str(tmp_path / "reweighted")
        shutil.copytree(out, other)
        try:
            reweight(other, name="fuzz")
        except (ReweightRefused, WeightError, WeightsVersionError, StorageError):
            pass
        # the re-run: everything back byte for byte, or one line and exit 2
        capsys.readouterr()
        code = main(["build", built["src"], "--out", out, "--config", built["cfg"], "-q"])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if code == 0:
            assert files_of(out) == built["files"], (rel, how, err)
            assert verify_build(out) == []
        else:
            assert code == 2 and len(err.strip().splitlines()) >= 1, err
            pytest.fail(f"{rel} {how}: not repaired: {err.strip().splitlines()[-1]}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
