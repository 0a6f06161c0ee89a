"""A finished build with an append, damaged for real: a re-run (or the next append) repairs what the
rest of OUT can rebuild, to the same bytes, and never goes back before the append; what is changed
behind build.json's back is named by verify, audit and the loader (docs/output.md, "Integrity")."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharding.loader import LoaderError, load_population

from .helpers import cli, corpus_folder, files_of, write_config
from .test_damaged_out import forge_records

IMAGES = ("anime2sketch_001.jpg", "sketchkeras_002.jpg", "style2paints_004.jpg", "paintsundo_003.jpg",
          "style2paints_012.jpg", "danbooregion_004.jpg")  # fmt: skip
NEW = ("style2paints_006.jpg", "style2paints_009.jpg", "style2paints_013.jpg")
LATER = "style2paints_017.jpg"
CONFIG = "[scan]\nchunk_size = 2\n[shards]\nsamples_per_shard = 1\n[filters]\nmin_tags = 0\n"


def rows(out: str, name: str = "manifest.parquet") -> list[dict]:
    return pq.read_table(os.path.join(out, name)).to_pylist()


def build_json(out: str) -> dict:
    return json.load(open(os.path.join(out, "build.json")))


@pytest.fixture(scope="module")
def appended(corpus, ray_cluster, tmp_path_factory):
    """A build of six images, then an append of three more: (sources, config, OUT, its files)."""
    root = tmp_path_factory.mktemp("hostile-append")
    src, new = corpus_folder(corpus, root / "src", IMAGES), corpus_folder(corpus, root / "new", NEW)
    later = corpus_folder(corpus, root / "later", (LATER,))
    cfg = write_config(str(root / "cfg.toml"), CONFIG)
    out = str(root / "out")
    res = cli("build", str(src), "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    base_rows = len(rows(out))
    res = cli(
        "build", str(src), f"more={new}", "--out", out, "--config", cfg, "--append", "-q", address=ray_cluster
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(rows(out)) > base_rows and len(build_json(out)["appends"]) == 1
    return {"src": str(src), "new": str(new), "later": str(later), "cfg": cfg, "out": out, "files": files_of(out),
            "base_rows": base_rows}  # fmt: skip


def fresh(appended, tmp_path) -> str:
    out = str(tmp_path / "out")
    shutil.copytree(appended["out"], out)
    return out


def rerun(appended, out: str, *extra: str, address: str):
    """The original build command again (or, with ``--append``, the append command)."""
    sources = [appended["src"]] + ([f"more={appended['new']}"] if "--append" in extra else [])
    return cli("build", *sources, "--out", out, "--config", appended["cfg"], "-q", *extra, address=address)


def appended_shard(out: str) -> str:
    return build_json(out)["appends"][0]["shards"][0]


def old_shard(out: str) -> str:
    added = set(build_json(out)["appends"][0]["shards"])
    return sorted(
        s["path"]
        for s in json.load(open(os.path.join(out, "shards.json")))["shards"]
        if s["path"] not in added
    )[0]


def flip(path: str, at: int | None = None) -> None:
    with open(path, "r+b") as fh:
        size = fh.seek(0, 2)
        at = size // 2 if at is None else at
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x10]))


def test_repair_after_an_append_keeps_the_append(appended, ray_cluster, tmp_path):
    """An appended shard deleted and an old one flipped; the original command re-run rewrites both
    and the build keeps its appended rows, shards and record (was: rolled back to before the append)."""
    out = fresh(appended, tmp_path)
    gone, flipped = appended_shard(out), old_shard(out)
    os.remove(os.path.join(out, gone))
    flip(os.path.join(out, flipped))
    res = rerun(appended, out, address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert gone in res.stderr and flipped in res.stderr and "Traceback" not in res.stderr
    assert "already complete" not in res.stdout and "repaired" in res.stdout
    assert files_of(out) == appended["files"]  # every file, the append's included, as it was
    assert len(build_json(out)["appends"]) == 1
    assert cli("verify", out).returncode == 0


def test_old_shard_deleted_then_append_repairs_it_first(appended, ray_cluster, tmp_path):
    """Was: exit 0, no word, the shard stays missing."""
    out = fresh(appended, tmp_path)
    gone = old_shard(out)
    os.remove(os.path.join(out, gone))
    res = rerun(appended, out, "--append", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert gone in res.stderr and "1 file(s) repaired" in res.stdout
    assert files_of(out) == appended["files"]


def test_manifest_row_removed_then_append(appended, ray_cluster, tmp_path):
    """Was: OUT half rewritten, then `RuntimeError: accounting error` on every re-run. The manifest
    is rebuilt from the plan, the state markers and the increment, then the append goes on."""
    out = fresh(appended, tmp_path)
    before = rows(out)
    pq.write_table(
        pq.read_table(os.path.join(out, "manifest.parquet")).slice(1), os.path.join(out, "manifest.parquet")
    )
    res = cli("build", appended["src"], f"more={appended['new']}", f"later={appended['later']}", "--out", out,
              "--config", appended["cfg"], "--append", "-q", address=ray_cluster)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "manifest.parquet" in res.stderr and "Traceback" not in res.stderr
    after = rows(out)
    assert after[: len(before)] == before and [r["source"] for r in after[len(before) :]] == ["later"]
    assert len(build_json(out)["appends"]) == 2
    assert cli("verify", out).returncode == 0


def test_truncated_manifest_is_not_already_complete(appended, ray_cluster, tmp_path):
    out = fresh(appended, tmp_path)
    path = os.path.join(out, "manifest.parquet")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    assert "manifest.parquet" in cli("verify", out).stdout
    res = rerun(appended, out, address=ray_cluster)
    assert res.returncode == 0 and "already complete" not in res.stdout, res.stderr[-3000:]
    assert files_of(out) == appended["files"]


def _replace_shard(out: str) -> str:
    """One shard's bytes replaced by another's, and its shards.json entry updated to match."""
    shards = json.load(open(os.path.join(out, "shards.json")))
    victim, donor = shards["shards"][0], shards["shards"][1]
    shutil.copy(os.path.join(out, donor["path"]), os.path.join(out, victim["path"]))
    victim.update(bytes=donor["bytes"], sha256=donor["sha256"])
    json.dump(shards, open(os.path.join(out, "shards.json"), "w"))
    return victim["path"]


def test_replaced_shard_with_its_shards_json_entry_updated(appended, ray_cluster, tmp_path):
    """Was: verify ok and the re-run "already complete" (the state markers still held the old hash)."""
    out = fresh(appended, tmp_path)
    victim = _replace_shard(out)
    res = cli("verify", out)
    assert res.returncode == 1 and "shards.json" in res.stdout and "state marker" in res.stdout, res.stdout
    res = rerun(appended, out, address=ray_cluster)
    assert res.returncode == 0 and victim in res.stderr and "shards.json" in res.stderr, res.stderr[-3000:]
    assert files_of(out) == appended["files"]


def test_a_forged_record_is_named_never_trusted_over_the_state_marker(appended, ray_cluster, tmp_path):
    """build.json rewritten to match the replaced shard too: the shard's state marker and the shard
    made again from its plan rows still disagree with it, so verify names it and a re-run stops
    with one line instead of adopting either side."""
    out = fresh(appended, tmp_path)
    victim = _replace_shard(out)
    forge_records(out)
    res = cli("verify", out)
    assert res.returncode == 1 and f"{victim}: shards.json says" in res.stdout, res.stdout
    res = rerun(appended, out, address=ray_cluster)
    assert res.returncode == 2 and victim in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]


def _write_weights(out: str, weights: np.ndarray) -> None:
    path = os.path.join(out, "weights", "v1.parquet")
    table = pq.read_table(path)
    table = table.set_column(
        table.schema.get_field_index("weight"), "weight", pa.array(weights, pa.float64())
    )
    pq.write_table(table, path)


def test_a_version_rewritten_to_one_sample_is_named_and_solved_again(appended, ray_cluster, tmp_path):
    """Was: passed verify and audit (no hash or re-solve check of weight files)."""
    out = fresh(appended, tmp_path)
    n = len(rows(out))
    _write_weights(out, np.r_[float(n), np.zeros(n - 1)])  # all the mass on one sample, still mean 1
    res = cli("verify", out)
    assert (
        res.returncode == 1 and "weights/v1.parquet" in res.stdout and "recorded in build.json" in res.stdout
    ), res.stdout
    res = cli("audit", out, "--draws", "100")
    assert res.returncode == 2 and "weights/v1.parquet" in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(LoaderError, match="v1.parquet"):
        load_population(out)
    forge_records(out)  # the record rewritten too: solving the recorded policy again still tells
    res = cli("verify", out)
    assert res.returncode == 1 and "not what its recorded policy gives" in res.stdout, res.stdout
    out = fresh(appended, tmp_path / "again")
    _write_weights(out, np.r_[float(n), np.zeros(n - 1)])
    res = rerun(appended, out, address=ray_cluster)
    assert res.returncode == 0 and "weights/v1.parquet" in res.stderr, res.stderr[-3000:]
    assert files_of(out) == appended["files"]  # solved again from its policy: the same bytes


def test_weights_whose_sum_overflows_are_refused(appended, tmp_path):
    """Two weights of 1e308: was audit ok and the loader drawing only one key."""
    out = fresh(appended, tmp_path)
    n = len(rows(out))
    _write_weights(out, np.r_[1e308, 1e308, np.ones(n - 2)])
    forge_records(out)  # past the record: the numbers themselves are checked
    with pytest.raises(LoaderError, match="sum is finite"):
        load_population(out)
    res = cli("audit", out, "--draws", "100")
    assert res.returncode == 2 and "sum is finite" in res.stderr and "Traceback" not in res.stderr
    res = cli("verify", out)
    assert res.returncode == 1 and "weights must be finite" in res.stdout


def test_a_changed_weights_section_in_an_append_is_solved_as_a_new_version(appended, ray_cluster, tmp_path):
    """Was: dropped without a word."""
    out = fresh(appended, tmp_path)
    cfg = write_config(str(tmp_path / "w.toml"), CONFIG + "[weights]\nhigh_weight = 8.0\n")
    res = cli("build", appended["src"], f"more={appended['new']}", f"later={appended['later']}", "--out", out,
              "--config", cfg, "--append", "-q", address=ray_cluster)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "weights v2: new: the [weights] given" in res.stderr and "--name v2 --activate" in res.stderr
    record = build_json(out)
    assert record["weights_active"] == "v1" and set(record["appends"][-1]["weights"]) == {"v1", "v2"}
    v2 = pq.read_table(os.path.join(out, "weights", "v2.parquet"))
    assert json.loads(v2.schema.metadata[b"linepairs.weights"])["weights"]["high_weight"] == 8.0
    assert cli("verify", out).returncode == 0
