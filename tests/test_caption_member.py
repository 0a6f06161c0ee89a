"""Contract 4: every sample carries its caption as a ``txt`` member, by the one rule of
sharding/captions.py, and ``verify`` holds the shards to it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile

import pyarrow.parquet as pq
import pytest

from sharding.captions import caption_of_row
from sharding.verify import verify_build

from .weighted_builds import shared_build


@pytest.fixture(scope="module")
def build(tmp_path_factory, ray_cluster) -> str:
    return shared_build(tmp_path_factory)


def _members(path: str) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_every_sample_has_its_caption_from_the_manifest_tags(build):
    manifest = {r["key"]: r for r in pq.read_table(os.path.join(build, "manifest.parquet")).to_pylist()}
    seen = 0
    for entry in json.load(open(os.path.join(build, "shards.json")))["shards"]:
        members = _members(os.path.join(build, entry["path"]))
        for key, row in manifest.items():
            if row["shard"] != entry["path"]:
                continue
            text = members[f"{key}.txt"].decode("utf-8")
            assert text == caption_of_row(row).text and "\n" not in text
            assert "_" not in text  # Danbooru's underscores written as spaces (no kaomoji in this build)
            seen += 1
    assert seen == len(manifest)
    assert any(not r["tags"] for r in manifest.values())  # the folder source: empty captions, "" members


def test_verify_names_a_txt_that_is_not_the_caption_of_its_tags(build, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(build, out)
    assert verify_build(out) == []
    shards = json.load(open(os.path.join(out, "shards.json")))
    entry = shards["shards"][0]
    path = os.path.join(out, entry["path"])
    buf = io.BytesIO()
    changed = None
    with tarfile.open(path) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name.endswith(".txt") and changed is None:
                changed, data = info.name, b"1girl, something else"
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    open(path, "wb").write(buf.getvalue())
    entry["bytes"], entry["sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    json.dump(shards, open(os.path.join(out, "shards.json"), "w"))
    faults = verify_build(out)
    key = changed.split(".")[0]
    # the forged shards.json is named by the integrity checks too (docs/output.md, "Integrity"); the
    # member check still reads the shard and names the txt
    assert f"{entry['path']}: {key}: txt is not the caption of its json's tags" in faults
    assert all(f.startswith(("shards.json:", f"{entry['path']}:")) for f in faults), faults
    assert any("state marker" in f for f in faults) and any(f.startswith("shards.json:") for f in faults)
