"""Shards are plain WebDataset: readable by the ``webdataset`` package and by HF ``datasets``' webdataset loader."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from .weighted_builds import shared_build


@pytest.fixture(scope="module")
def build(tmp_path_factory, ray_cluster) -> str:
    return shared_build(tmp_path_factory)


def _tars(build: str) -> list[str]:
    return sorted(glob.glob(os.path.join(build, "shards", "*", "*.tar")))


def _manifest(build: str) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(os.path.join(build, "manifest.parquet")).to_pylist()}


def test_plain_webdataset_reads_every_sample(build):
    wds = pytest.importorskip("webdataset")
    manifest = _manifest(build)
    seen = set()
    for sample in wds.WebDataset(_tars(build), shardshuffle=False).decode("rgb8"):
        key = sample["__key__"]
        row = manifest[key]
        h, w = row["bucket_h"], row["bucket_w"]
        assert sample["jpg"].shape == (h, w, 3) and sample["jpg"].dtype == np.uint8
        for name in row["extractors"]:
            assert sample[f"lineart.{name}.png"].shape[:2] == (h, w)
        assert sample["json"]["key"] == key and sample["json"]["source_id"] == row["source_id"]
        seen.add(key)
    assert seen == set(manifest)


def test_hf_datasets_webdataset_loader_reads_every_sample(build, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the packaged webdataset builder needs no hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    manifest = _manifest(build)
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": _tars(build)}, split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == len(manifest)
    assert {"__key__", "jpg", "json", "lineart.canny.png", "lineart.xdog.png"} <= set(ds.column_names)
    for row in ds:
        ref = manifest[row["__key__"]]
        assert row["jpg"].size == (ref["bucket_w"], ref["bucket_h"])  # PIL image
        assert row["lineart.xdog.png"].size == (ref["bucket_w"], ref["bucket_h"])
        assert row["json"]["source"] == ref["source"] and row["json"]["bucket"] == [
            ref["bucket_w"],
            ref["bucket_h"],
        ]


_FOLDER_FIRST: dict[str, tuple[str, list[str]]] = {}


def _folder_only_first(tmp_path_factory) -> tuple[str, list[str]]:
    """A build whose folder-source samples sit in their own bucket, so one tar holds only them
    (made once per session); returns OUT and its tars, folder-only ones first."""
    if "out" in _FOLDER_FIRST:
        return _FOLDER_FIRST["out"]
    import json as _json

    import cv2

    from curation.sources import parse_source
    from pipelines.build.request import BuildRequest
    from pipelines.build.run import run_build

    from .conftest import gradient_image
    from .weighted_builds import small_config

    root = tmp_path_factory.mktemp("hf-folder-first")
    dan, res = root / "danbooru", root / "research"
    dan.mkdir()
    res.mkdir()
    posts = []
    for i in range(6):  # portrait posts with tags, scores and ids
        cv2.imwrite(str(dan / f"{i + 1}.jpg"), gradient_image(192, 288, seed=i)[:, :, ::-1])
        posts.append({
            "id": i + 1, "md5": f"{i:032x}", "file_ext": "jpg", "image_width": 192, "image_height": 288,
            "rating": "g", "score": i - 2, "fav_count": i, "tag_string_general": "1girl solo",
            "tag_string_character": "hatsune_miku", "tag_string_artist": f"artist_{i}",
            "tag_string_copyright": "vocaloid", "tag_string_meta": "highres",
        })  # fmt: skip
    (dan / "posts.jsonl").write_text("".join(_json.dumps(p) + "\n" for p in posts))
    for i in range(6):  # landscape folder images: no id, rating, score, favourites or tags
        cv2.imwrite(str(res / f"r{i}.png"), gradient_image(288, 192, seed=50 + i)[:, :, ::-1])
    out = str(root / "out")
    sources = [parse_source(f"danbooru={dan}"), parse_source(f"research={res}")]
    run_build(
        BuildRequest(
            sources, out, small_config(shares={"danbooru": 0.5, "research": 0.5}), show_progress=False
        )
    )
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    by_shard: dict[str, set[str]] = {}
    for row in manifest:
        by_shard.setdefault(row["shard"], set()).add(row["source"])
    folder_only = sorted(s for s, kinds in by_shard.items() if kinds == {"research"})
    others = sorted(s for s, kinds in by_shard.items() if "danbooru" in kinds)
    assert folder_only and others, by_shard
    _FOLDER_FIRST["out"] = out, [os.path.join(out, s) for s in folder_only + others]
    return _FOLDER_FIRST["out"]


def _load_first_tar_folder_only(datasets, tars: list[str], cache: str):
    return datasets.load_dataset("webdataset", data_files={"train": tars}, split="train", cache_dir=cache)


def _check_hf_rows(ds, manifest: dict[str, dict]) -> None:
    assert ds.num_rows == len(manifest)
    for row in ds:
        ref, meta = manifest[row["__key__"]], row["json"]
        assert row["lineart.canny.png"].size == (ref["bucket_w"], ref["bucket_h"])
        if ref["source"] == "danbooru":  # the typed values survive the folder-first schema
            assert meta["id"] == ref["post_id"] >= 1 and meta["rating"] == "g"
            assert (
                meta["score"] == ref["score"] and meta["has_score"] and meta["fav_count"] == ref["fav_count"]
            )
            assert meta["tags"]["character"] == "hatsune_miku"
            assert meta["tags"]["general"].split() == ["1girl", "solo"]
            assert 1 <= meta["metrics"]["jpeg_quality"] <= 100  # JPEG posts: measured
        else:  # folder PNGs: the documented sentinels, never null
            assert (meta["id"], meta["rating"], meta["has_score"], meta["fav_count"]) == (-1, "", False, -1)
            assert meta["tags"]["character"] == "" and meta["metrics"]["jpeg_quality"] == -1.0
        assert meta["dropped_lines"] == {"canny": "", "xdog": ""}


def test_hf_datasets_reads_a_build_whose_first_tar_is_folder_only(tmp_path_factory, ray_cluster, monkeypatch):
    """HF infers the JSON schema from the first tar's first samples: a field that is null (or an
    empty list) there and typed later would fail the cast. Every field keeps one type instead."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    out, tars = _folder_only_first(tmp_path_factory)
    manifest = {r["key"]: r for r in pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()}
    cache = str(tmp_path_factory.mktemp("hf-cache"))
    _check_hf_rows(_load_first_tar_folder_only(datasets, tars, cache), manifest)


def test_hf_datasets_loads_out_through_its_dataset_card(tmp_path_factory, ray_cluster, monkeypatch):
    """OUT/README.md names the shards and their exact features: ``load_dataset(OUT)`` infers nothing."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    out, _ = _folder_only_first(tmp_path_factory)
    manifest = {r["key"]: r for r in pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()}
    ds = datasets.load_dataset(out, split="train", cache_dir=str(tmp_path_factory.mktemp("hf-card")))
    assert isinstance(ds.features["jpg"], datasets.Image)
    assert ds.features["json"]["id"] == datasets.Value("int64")
    _check_hf_rows(ds, manifest)


def test_the_bucket_batching_of_docs_output_md_gives_one_size_per_batch(build):
    """docs/output.md shows plain WebDataset readers how to batch by bucket; run that very code."""
    import re

    pytest.importorskip("webdataset")
    doc = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "output.md")).read()
    block = re.search(r"<!-- bucket-batching:.*?-->\n```python\n(.*?)```", doc, re.S).group(1)
    assert "bucket_batches(src, 16)" in block
    namespace = {"OUT": build}
    exec(block.replace("bucket_batches(src, 16)", "bucket_batches(src, 4)"), namespace)  # runs every batch
    batches_seen = list(namespace["dataset"])
    assert batches_seen and all(len(b) == 4 for b in batches_seen)
    for batch in batches_seen:
        assert len({tuple(s["json"]["bucket"]) for s in batch}) == 1
        assert np.stack([s["jpg"] for s in batch]).shape[0] == 4
    assert namespace["images"].shape[0] == 4 and all(isinstance(c, str) for c in namespace["captions"])
