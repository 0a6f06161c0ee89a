"""Damaged OUT: a re-run checks size and sha256 of every shard and rewrites what changed; paths in
OUT's files never leave OUT; verify streams members with a cap; an empty build is said out loud."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharding.loader import LoaderError, load_population
from sharding.verify import verify_shard

from .helpers import THREE_IMAGES, cli, corpus_folder, write_config

CONFIG = "[shards]\nsamples_per_shard = 1\n[dedup]\nenabled = false\n[filters]\nmin_tags = 0\n"


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def built(small_corpus_module, ray_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("damaged")
    cfg = write_config(str(base / "c.toml"), CONFIG)
    out = str(base / "out")
    res = cli("build", small_corpus_module, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    shards = json.load(open(os.path.join(out, "shards.json")))["shards"]
    assert len(shards) >= 3
    return small_corpus_module, cfg, out, {s["path"]: s["sha256"] for s in shards}


@pytest.fixture(scope="module")
def small_corpus_module(corpus, tmp_path_factory):
    return corpus_folder(corpus, tmp_path_factory.mktemp("three"), THREE_IMAGES)


def copy_out(built, tmp_path) -> str:
    out = str(tmp_path / "out")
    shutil.copytree(built[2], out)
    return out


def forge_records(out: str) -> None:
    """Record OUT's files as they are now in build.json and its copy: a hostile OUT that is
    consistent with itself, so the checks behind the records are what is tested."""
    from sharding.integrity import FILES, commit, committed, record_files
    from sharding.layout import Layout

    layout = Layout(out)
    record, _ = committed(layout)
    policies = {
        rel.split("/")[-1][: -len(".parquet")]: e["policy"]
        for rel, e in record[FILES].items()
        if "policy" in e
    }
    commit(layout, {**record, FILES: record_files(layout, policies)})


def flip(path: str, at: int = 700) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x01]))


def test_rerun_rewrites_flipped_truncated_and_deleted_shards(built, ray_cluster, tmp_path):
    src, cfg, _, good = built
    out = copy_out(built, tmp_path)
    flipped, cut, gone = sorted(good)[:3]
    flip(os.path.join(out, flipped))
    with open(os.path.join(out, cut), "r+b") as fh:
        fh.truncate(1000)
    os.remove(os.path.join(out, gone))
    res = cli("build", src, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "already complete" not in res.stdout
    assert all(name in res.stderr for name in (flipped, cut, gone))  # each damaged shard is named
    assert {p: sha(os.path.join(out, p)) for p in good} == good  # the same bytes as the first build
    assert cli("verify", out).returncode == 0


def test_same_size_flip_without_build_json_is_repaired(built, ray_cluster, tmp_path):
    src, cfg, _, good = built
    out = copy_out(built, tmp_path)
    os.remove(os.path.join(out, "build.json"))
    victim = sorted(good)[0]
    flip(os.path.join(out, victim))
    res = cli("build", src, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sha(os.path.join(out, victim)) == good[victim]


def test_shard_paths_leaving_out_are_refused(built, tmp_path):
    out = copy_out(built, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    first = sorted(built[3])[0]
    shutil.copy(os.path.join(out, first), outside / "x.tar")
    manifest = pq.read_table(os.path.join(out, "manifest.parquet"))
    shard = [("../elsewhere/x.tar" if s == first else s) for s in manifest["shard"].to_pylist()]
    manifest = manifest.set_column(manifest.schema.get_field_index("shard"), "shard", pa.array(shard))
    pq.write_table(manifest, os.path.join(out, "manifest.parquet"))
    with pytest.raises(LoaderError, match="manifest.parquet is damaged"):  # build.json's record says so
        load_population(out)
    forge_records(out)  # records rewritten to match: the path check itself refuses
    with pytest.raises(LoaderError, match="leaves"):
        load_population(out)
    shards = json.load(open(os.path.join(out, "shards.json")))
    shards["shards"][0]["path"] = "/etc/passwd"
    json.dump(shards, open(os.path.join(out, "shards.json"), "w"))
    forge_records(out)
    res = cli("verify", out)
    assert res.returncode == 1 and "Traceback" not in res.stderr + res.stdout
    assert "/etc/passwd" in res.stdout and "leaves" in res.stdout


def test_verify_never_reads_a_huge_member_whole(tmp_path):
    """A GNU sparse tar: 1.5 GiB member, a few KiB on disk. verify reports it without reading it."""
    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar to write a sparse member")
    work = tmp_path / "w"
    work.mkdir()
    with open(work / "k.jpg", "wb") as fh:
        fh.truncate(3 << 29)
    shard_dir = tmp_path / "out" / "shards" / "64x64"
    shard_dir.mkdir(parents=True)
    tar = shard_dir / "high-000000.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(tar), "-C", str(work), "k.jpg"], check=True)
    assert tar.stat().st_size < 1 << 20
    entry = {
        "path": "shards/64x64/high-000000.tar",
        "bytes": tar.stat().st_size,
        "sha256": sha(tar),
        "samples": 1,
    }
    row = {"key": "k", "bucket_w": 64, "bucket_h": 64, "weight": 1.0, "extractors": []}
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    faults = verify_shard(str(tmp_path / "out"), entry, {"k": row})
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert any("not read" in f for f in faults), faults
    assert grown_mib < 200


def test_empty_build_says_so_and_the_deadline_holds_in_ray_workers(
    small_corpus_module, ray_cluster, tmp_path
):
    cfg = write_config(str(tmp_path / "c.toml"), "[scan]\nmax_seconds = 0.000001\n")
    out = str(tmp_path / "out")
    res = cli("build", small_corpus_module, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "too_slow" in res.stdout  # the per-input deadline fires inside the Ray scan tasks
    assert "EMPTY" in res.stderr and "Traceback" not in res.stderr
    res = cli("verify", out)
    assert res.returncode == 0 and "EMPTY" in res.stdout
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    assert {r["reason"] for r in rejects} == {"too_slow"} and len(rejects) == 3


def _cut(path: str, how: str) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2] if how == "truncated" else b"")


@pytest.mark.parametrize(
    "name, how",
    [("weights/v1.parquet", "truncated"), ("manifest.parquet", "empty"), ("shards.json", "truncated"),
     ("build.json", "empty"), ("weights/v1.parquet", "empty"), ("manifest.parquet", "truncated")],
)  # fmt: skip
def test_a_cut_or_empty_table_is_one_line_in_every_command(built, tmp_path, capsys, name, how):
    """Was: ArrowInvalid / JSONDecodeError tracebacks in verify, audit, reweight, the loader and
    build. In-process (pipelines.cli.main): any exception that escapes fails the test."""
    from pipelines.cli import main

    src, cfg, _, _ = built
    out = copy_out(built, tmp_path)
    _cut(os.path.join(out, name), how)
    assert main(["verify", out]) == 1
    assert name in capsys.readouterr().out
    # audit needs every table but build.json (its committed copy stands in for it); reweight
    # needs only the manifest (it solves a new version from it alone)
    needs = {"audit": name != "build.json", "reweight": name == "manifest.parquet"}
    for args in (["audit", out, "--draws", "50"], ["reweight", out, "--name", "again"]):
        code = main(args)
        err = capsys.readouterr().err
        if not needs[args[0]]:
            assert code == 0, (args[0], err)
            continue
        assert code == 2 and name in err and len(err.strip().splitlines()) == 1, (args[0], err)
    if name != "build.json":
        with pytest.raises(LoaderError, match=name.replace(".", r"\.")):
            load_population(out)
    assert main(["build", src, "--out", out, "--config", cfg, "-q"]) == 0
    if name != "build.json":  # (reweight's commit already wrote build.json again)
        assert name in capsys.readouterr().err
    assert main(["verify", out]) == 0


def test_a_garbled_active_marker_names_the_command_that_fixes_it(built, tmp_path):
    """Was: "rebuild it", where `reweight --name v1 --activate` (or a re-run) would do."""
    out = copy_out(built, tmp_path)
    open(os.path.join(out, "weights", "active.json"), "w").write('{"name": ')
    with pytest.raises(LoaderError, match=r"reweight .* --name v1 --activate"):
        load_population(out)
    res = cli("audit", out, "--draws", "50")
    assert res.returncode == 2 and "--name v1 --activate" in res.stderr and "rebuild" not in res.stderr


def test_an_unfinished_build_heals_damaged_units_of_its_own(built, ray_cluster, tmp_path):
    """A resume (nothing committed yet) whose shard state marker is garbled and whose records part
    was deleted (as the one-line advice for a damaged unit says): both are made again."""
    src, cfg, _, good = built
    out = copy_out(built, tmp_path)
    for name in ("build.json", "_state/build.json", "manifest.parquet", "rejects.parquet", "shards.json"):
        os.remove(os.path.join(out, name))  # killed before the commit
    state = sorted(os.listdir(os.path.join(out, "_state", "shards")))[0]
    open(os.path.join(out, "_state", "shards", state), "w").write('{"stats": ')
    os.remove(os.path.join(out, "_state", "records", "part-000000.parquet"))
    res = cli("build", src, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: sha(os.path.join(out, p)) for p in good} == good
    assert cli("verify", out).returncode == 0


def test_a_reweight_killed_before_its_commit_leaves_nothing_that_counts(built, tmp_path, capsys):
    """Its version file is written, build.json is not: verify names the file, the next reweight
    or re-run removes it, and the same reweight run again succeeds."""
    from pipelines.cli import main

    src, cfg, _, _ = built
    out = copy_out(built, tmp_path)
    shutil.copy(os.path.join(out, "weights", "v1.parquet"), os.path.join(out, "weights", "v2.parquet"))
    assert main(["verify", out]) == 1
    assert "weights/v2.parquet: not recorded in build.json" in capsys.readouterr().out
    assert main(["build", src, "--out", out, "--config", cfg, "-q"]) == 0
    assert "weights/v2.parquet removed" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "weights", "v2.parquet"))
    assert main(["reweight", out, "--name", "v2"]) == 0 and main(["verify", out]) == 0
