"""``build --append`` and ``build --retry`` on real builds: old shards byte-identical, duplicates
point into the old build, a kill during an append resumes to the same bytes, a missing file is picked up."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import cv2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from .conftest import gradient_image
from .helpers import cli, kill_when, popen_build, write_config

BASE_IMAGES = ("anime2sketch_001.jpg", "sketchkeras_002.jpg", "style2paints_004.jpg", "paintsundo_003.jpg",
               "style2paints_012.jpg", "danbooregion_004.jpg")  # fmt: skip
NEW_IMAGE = "style2paints_006.jpg"
# One input per scan chunk and one sample per shard: many small units, so a kill lands mid-phase.
CONFIG = "[scan]\nchunk_size = 1\n[shards]\nsamples_per_shard = 1\n"


def _sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _state(out: str) -> dict:
    """Everything an append must reproduce exactly (build.json aside: it records times)."""
    return {
        "manifest": pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist(),
        "rejects": pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist(),
        "shards": json.load(open(os.path.join(out, "shards.json"))),
        "weights": {
            os.path.basename(p): _sha256(p) for p in sorted(glob.glob(os.path.join(out, "weights", "*")))
        },
    }


@pytest.fixture(scope="module")
def base(corpus, ray_cluster, tmp_path_factory):
    """A finished build of six real images, and a folder of new inputs: one new image, one exact and
    one near duplicate of kept samples."""
    root = tmp_path_factory.mktemp("append")
    src = root / "src"
    src.mkdir()
    for name in BASE_IMAGES:
        shutil.copy(os.path.join(corpus, name), src / name)
    cfg = write_config(str(root / "cfg.toml"), CONFIG)
    out = str(root / "base")
    res = cli("build", str(src), "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    assert len(manifest) >= 3, "the base build must keep a few of the corpus images"
    new = root / "new"
    new.mkdir()
    shutil.copy(os.path.join(corpus, NEW_IMAGE), new / "fresh.jpg")
    exact_of, near_of = manifest[0], manifest[1]
    shutil.copy(_original(src, exact_of), new / "copy.jpg")  # byte-identical
    img = cv2.imread(_original(src, near_of))
    small = cv2.resize(img, (img.shape[1] * 4 // 5, img.shape[0] * 4 // 5), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(new / "near.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 90])  # resized and re-encoded
    return {
        "src": str(src), "new": str(new), "cfg": cfg, "out": out,
        "exact_of": exact_of["key"], "near_of": near_of["key"],
    }  # fmt: skip


def _original(src, row) -> str:
    """The file of the folder source behind a manifest row (its source_id is the relative path + a hash)."""
    for name in os.listdir(src):
        if hashlib.sha256(open(os.path.join(src, name), "rb").read()).hexdigest() == row["sha256"]:
            return os.path.join(src, name)
    raise AssertionError(f"no file for {row['key']}")


def _append(base, out: str, ray_cluster):
    return cli(
        "build", base["src"], f"more={base['new']}", "--out", out, "--config", base["cfg"], "--append",
        address=ray_cluster,
    )  # fmt: skip


@pytest.fixture(scope="module")
def appended(base, ray_cluster, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("appended") / "out")
    shutil.copytree(base["out"], out)
    res = _append(base, out, ray_cluster)
    assert res.returncode == 0, res.stderr
    return out


def test_append_adds_only_new_shards_and_points_duplicates_into_the_old_build(base, appended, ray_cluster):
    old_shards = json.load(open(os.path.join(base["out"], "shards.json")))["shards"]
    new_shards = json.load(open(os.path.join(appended, "shards.json")))["shards"]
    old_paths = {s["path"] for s in old_shards}
    for entry in old_shards:  # every existing shard listed unchanged and byte-identical on disk
        assert entry in new_shards
        assert _sha256(os.path.join(appended, entry["path"])) == entry["sha256"]
    added = [s for s in new_shards if s["path"] not in old_paths]
    assert len(added) == 1 and added[0]["samples"] == 1

    old_manifest = pq.read_table(os.path.join(base["out"], "manifest.parquet")).to_pylist()
    manifest = pq.read_table(os.path.join(appended, "manifest.parquet")).to_pylist()
    assert manifest[: len(old_manifest)] == old_manifest  # old rows first, unchanged
    (fresh,) = manifest[len(old_manifest) :]
    assert fresh["source"] == "more" and fresh["shard"] == added[0]["path"]

    rejects = [
        r
        for r in pq.read_table(os.path.join(appended, "rejects.parquet")).to_pylist()
        if r["source"] == "more"
    ]
    copy = next(r for r in rejects if r["source_id"].startswith("copy"))
    near = next(r for r in rejects if r["source_id"].startswith("near"))
    assert copy["reason"] == "exact_duplicate" and copy["duplicate_of"] == base["exact_of"]
    assert near["reason"] == "near_duplicate" and near["duplicate_of"] == base["near_of"]
    assert {copy["duplicate_of"], near["duplicate_of"]} <= {r["key"] for r in old_manifest}

    build = json.load(open(os.path.join(appended, "build.json")))
    (record,) = build["appends"]
    assert record["kind"] == "append" and record["inputs"] == 3 and record["kept"] == 1
    assert record["shards"] == [added[0]["path"]] and record["weights"] == {"v1": "ok"}
    assert (
        build["counts"]["inputs"]
        == json.load(open(os.path.join(base["out"], "build.json")))["counts"]["inputs"] + 3
    )
    weights = pq.read_table(os.path.join(appended, "weights", "v1.parquet"))
    assert weights["key"].to_pylist() == [r["key"] for r in manifest]  # re-solved over the union
    assert cli("verify", appended).returncode == 0

    again = _append(base, appended, ray_cluster)  # nothing unseen: no new increment
    assert again.returncode == 0 and "nothing to append" in again.stderr
    assert len(json.load(open(os.path.join(appended, "build.json")))["appends"]) == 1


def test_an_increment_planned_before_its_early_rejects_file_is_replayed_the_same(
    appended, base, ray_cluster, tmp_path
):
    """An increment planned by the code before one plan body kept only its dedup and too-small rows
    (``dedup_rejects.parquet``; the scan rejects were read from its scan parts): a repair replaying
    it gives the same rejects."""
    out = str(tmp_path / "out")
    shutil.copytree(appended, out)
    inc = os.path.join(out, "_state", "increments", "000001")
    early = pq.read_table(os.path.join(inc, "early_rejects.parquet"))
    planned = early.filter(pc.is_in(early["stage"], pa.array(["dedup", "plan"])))
    assert planned.num_rows >= 2  # the exact and the near copy
    pq.write_table(planned, os.path.join(inc, "dedup_rejects.parquet"))
    os.remove(os.path.join(inc, "early_rejects.parquet"))
    os.remove(os.path.join(out, "rejects.parquet"))
    res = _append(base, out, ray_cluster)  # nothing to append: OUT repaired to its last commit
    assert res.returncode == 0, res.stderr
    assert _state(out)["rejects"] == _state(appended)["rejects"]


def test_append_refuses_a_pixel_change(base, tmp_path, ray_cluster):
    out = str(tmp_path / "out")
    shutil.copytree(base["out"], out)
    cfg = write_config(
        str(tmp_path / "c.toml"), CONFIG.replace("samples_per_shard = 1", "samples_per_shard = 2")
    )
    res = cli("build", base["src"], "--out", out, "--config", cfg, "--append", address=ray_cluster)
    assert res.returncode == 2 and "shards.samples_per_shard" in res.stderr and "--out NEW_OUT" in res.stderr


@pytest.mark.parametrize("marker", ["scan", "materialize"])
def test_kill_during_append_resumes_to_the_same_bytes(base, appended, ray_cluster, tmp_path, marker):
    out = str(tmp_path / "out")
    shutil.copytree(base["out"], out)
    scans = len(glob.glob(os.path.join(out, "scan", "*.parquet")))
    shard_states = len(glob.glob(os.path.join(out, "_state", "shards", "*.json")))
    proc = popen_build(
        base["src"],
        f"more={base['new']}",
        "--out",
        out,
        "--config",
        base["cfg"],
        "--append",
        address=ray_cluster,
    )
    if marker == "scan":
        reached = lambda: len(glob.glob(os.path.join(out, "scan", "*.parquet"))) > scans  # noqa: E731
    else:
        reached = lambda: len(glob.glob(os.path.join(out, "_state", "increments", "*", "plan.parquet"))) > 0  # noqa: E731
    kill_when(proc, reached, 180, "append")
    assert "appends" not in json.load(open(os.path.join(out, "build.json"))), (
        "the append finished before the kill"
    )
    res = _append(base, out, ray_cluster)
    assert res.returncode == 0, res.stderr
    assert _state(out) == _state(appended)
    assert len(glob.glob(os.path.join(out, "_state", "shards", "*.json"))) == shard_states + 1
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)
    assert cli("verify", out).returncode == 0


RETRY_CONFIG = """
[scan]
min_side = 64
[buckets]
max_area = 55296
step = 32
min_side = 128
max_side = 384
[shards]
samples_per_shard = 2
[pair_quality]
enabled = false
[filters]
min_tags = 0
[metrics]
enabled = false
[dedup]
enabled = false
"""


def test_retry_missing_file_picks_up_the_file(tmp_path, ray_cluster):
    dan = tmp_path / "danbooru"
    dan.mkdir()
    posts = []
    for i in range(1, 6):
        posts.append({
            "id": i, "md5": f"{i:032x}", "file_ext": "jpg", "image_width": 192, "image_height": 288,
            "rating": "g", "score": i, "fav_count": i, "tag_string_general": "1girl solo",
            "tag_string_character": "", "tag_string_artist": "someone", "tag_string_copyright": "",
            "tag_string_meta": "",
        })  # fmt: skip
        if i != 3:  # post 3's image is not there yet
            cv2.imwrite(str(dan / f"{i}.jpg"), gradient_image(192, 288, seed=i)[:, :, ::-1])
    (dan / "posts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts))
    cfg = write_config(str(tmp_path / "cfg.toml"), RETRY_CONFIG)
    out = str(tmp_path / "out")
    assert cli("build", f"danbooru={dan}", "--out", out, "--config", cfg, address=ray_cluster).returncode == 0
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    assert [(r["source_id"], r["reason"]) for r in rejects] == [("3", "missing_file")]
    shards = {s["path"]: s["sha256"] for s in json.load(open(os.path.join(out, "shards.json")))["shards"]}

    cv2.imwrite(str(dan / "3.jpg"), gradient_image(192, 288, seed=3)[:, :, ::-1])  # the file arrives
    bad = cli("build", f"danbooru={dan}", "--out", out, "--config", cfg, "--retry", "missing_fil")
    assert bad.returncode == 2 and "unknown reject reason" in bad.stderr
    res = cli(
        "build",
        f"danbooru={dan}",
        "--out",
        out,
        "--config",
        cfg,
        "--retry",
        "missing_file",
        address=ray_cluster,
    )
    assert res.returncode == 0, res.stderr

    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    assert sorted(r["source_id"] for r in manifest) == ["1", "2", "3", "4", "5"]
    assert pq.read_table(os.path.join(out, "rejects.parquet")).num_rows == 0
    history = pq.read_table(os.path.join(out, "rejects_history.parquet")).to_pylist()
    assert [(h["source_id"], h["reason"], h["superseded_in"]) for h in history] == [("3", "missing_file", 1)]
    after = {s["path"]: s["sha256"] for s in json.load(open(os.path.join(out, "shards.json")))["shards"]}
    assert {p: after[p] for p in shards} == shards and len(after) == len(shards) + 1
    build = json.load(open(os.path.join(out, "build.json")))
    assert build["appends"][-1]["kind"] == "retry" and build["appends"][-1]["reasons"] == ["missing_file"]
    assert (
        build["counts"]["inputs"] == 5
        and build["counts"]["samples"] == 5
        and build["counts"]["rejected"] == 0
    )
    assert cli("verify", out).returncode == 0
