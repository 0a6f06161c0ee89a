"""An append or retry is all or nothing (issue 19, item 7): a refused one leaves every file of OUT
byte-identical, private state included; every weight version survives the append re-solved, or the
summary names the one that could not be; the config OUT was built with is reused when --config is left out."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from .helpers import cli, corpus_folder, files_of, write_config
from .test_hostile_append import CONFIG, IMAGES, NEW, rows


def _build(corpus, root, config_text: str, address: str) -> dict:
    src, new = corpus_folder(corpus, root / "src", IMAGES), corpus_folder(corpus, root / "new", NEW)
    cfg = write_config(str(root / "cfg.toml"), config_text)
    out = str(root / "out")
    res = cli("build", f"base={src}", "--out", out, "--config", cfg, "-q", address=address)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"src": f"base={src}", "new": f"more={new}", "cfg": cfg, "out": out, "files": files_of(out)}


@pytest.fixture(scope="module")
def plain(corpus, ray_cluster, tmp_path_factory):
    """Six images built with a config of its own (no shares)."""
    return _build(corpus, tmp_path_factory.mktemp("all-or-nothing"), CONFIG, ray_cluster)


@pytest.fixture(scope="module")
def shared_out(corpus, ray_cluster, tmp_path_factory):
    """The same six images under a [weights.shares] policy that names only their source."""
    text = CONFIG + "[weights.shares]\nbase = 1.0\n"
    return _build(corpus, tmp_path_factory.mktemp("all-or-nothing-shares"), text, ray_cluster)


def copy_of(built: dict, tmp_path, name: str = "out") -> str:
    out = str(tmp_path / name)
    shutil.copytree(built["out"], out)
    assert files_of(out) == built["files"]
    return out


def refused(res) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "nothing was written" in res.stderr


def test_a_new_source_under_a_shares_policy_leaves_out_byte_identical(shared_out, ray_cluster, tmp_path):
    """Was: new shards and manifest rows written, then refused at finalize (verify failed)."""
    out = copy_of(shared_out, tmp_path)
    res = cli(
        "build", shared_out["src"], shared_out["new"], "--out", out, "--append", "-q", address=ray_cluster
    )
    refused(res)
    assert "'more' has no share" in res.stderr and "linepairs reweight" in res.stderr
    assert files_of(out) == shared_out["files"]
    assert cli("verify", out).returncode == 0


def test_weights_the_grown_build_cannot_meet_are_refused_after_the_scan_and_rolled_back(
    plain, ray_cluster, tmp_path
):
    """Only the scan tells: the new source's three images cannot hold 90 % of the draws within the
    clip. The records and scan parts it wrote are removed again."""
    out = copy_of(plain, tmp_path)
    cfg = write_config(
        str(tmp_path / "w.toml"),
        CONFIG + "[weights]\nmax_weight = 1.5\n[weights.shares]\nbase = 0.1\nmore = 0.9\n",
    )
    res = cli(
        "build",
        plain["src"],
        plain["new"],
        "--out",
        out,
        "--config",
        cfg,
        "--append",
        "-q",
        address=ray_cluster,
    )
    refused(res)
    assert "cannot meet its share" in res.stderr
    assert files_of(out) == plain["files"]
    assert not os.path.exists(os.path.join(out, "_state", "increments"))


def test_append_without_config_reuses_the_recorded_one(plain, ray_cluster, tmp_path):
    """A build made with --config, appended to without it: the same tables and weights as with it."""
    given, reused = copy_of(plain, tmp_path, "given"), copy_of(plain, tmp_path, "reused")
    res = cli("build", plain["src"], plain["new"], "--out", given, "--config", plain["cfg"], "--append", "-q",
              address=ray_cluster)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    res = cli("build", plain["src"], plain["new"], "--out", reused, "--append", "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "weights v2" not in res.stderr  # the recorded [weights] is v1's: no new version
    for name in ("manifest.parquet", "rejects.parquet", "weights/v1.parquet"):
        assert rows(given, name) == rows(reused, name), name
    assert open(os.path.join(given, "shards.json")).read() == open(os.path.join(reused, "shards.json")).read()
    a, b = (json.load(open(os.path.join(o, "build.json"))) for o in (given, reused))
    assert a["appends"][0]["config_changes"] == b["appends"][0]["config_changes"] == []
    assert a["request"] == b["request"] and a["counts"] == b["counts"]
    assert len(rows(given)) > len(rows(plain["out"]))


def test_a_version_that_cannot_be_solved_again_is_named_in_the_summary(plain, ray_cluster, tmp_path):
    """Was: a non-active version deleted without a word."""
    out = copy_of(plain, tmp_path)
    shares = write_config(str(tmp_path / "s.toml"), "[weights.shares]\nbase = 1.0\n")
    res = cli("reweight", out, "--config", shares, "--name", "only-base")
    assert res.returncode == 0, res.stderr[-3000:]
    res = cli("build", plain["src"], plain["new"], "--out", out, "--append", "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "weights only-base: removed: source(s) more have samples but no target share" in res.stderr
    assert "note        weights only-base: removed" in res.stdout
    record = json.load(open(os.path.join(out, "build.json")))
    assert record["appends"][0]["weights"]["only-base"].startswith("removed")
    assert not os.path.exists(os.path.join(out, "weights", "only-base.parquet"))
    assert pq.read_table(os.path.join(out, "weights", "v1.parquet")).num_rows == len(rows(out))
    assert cli("verify", out).returncode == 0


def test_a_refused_retry_leaves_out_byte_identical(plain, ray_cluster, tmp_path):
    """A retry that would change the pixels of the existing shards is refused before its first byte."""
    out = copy_of(plain, tmp_path)
    cfg = write_config(
        str(tmp_path / "px.toml"), CONFIG.replace("samples_per_shard = 1", "samples_per_shard = 2")
    )
    res = cli(
        "build", plain["src"], "--out", out, "--config", cfg, "--retry", "all", "-q", address=ray_cluster
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "--retry cannot change settings that decide the pixels" in res.stderr
    assert files_of(out) == plain["files"]
