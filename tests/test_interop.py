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
