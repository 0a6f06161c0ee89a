"""End-to-end builds through the real CLI on real Ray: bad inputs, the contract, re-runs, verify."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from PIL import Image

from .badinputs import write_bad_inputs
from .helpers import cli, write_config


@pytest.fixture(scope="module")
def corpus_build(corpus, ray_cluster, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus") / "out")
    cfg = write_config(str(tmp_path_factory.mktemp("cfg") / "b.toml"), "[shards]\nsamples_per_shard = 8\n")
    res = cli("build", corpus, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    return out, cfg, res


def test_bad_inputs_all_accounted_for(tmp_path, corpus, ray_cluster):
    folder = str(tmp_path / "bad")
    expected = write_bad_inputs(folder)
    shutil.copy(os.path.join(corpus, "style2paints_004.jpg"), os.path.join(folder, "real one.jpg"))
    expected["real one.jpg"] = None
    out = str(tmp_path / "out")
    cfg = write_config(
        str(tmp_path / "c.toml"),
        "[filters]\nmin_tags = 0\nextensions = ['jpg', 'png', 'webp', 'gif']\n[dedup]\nenabled = false\n",
    )
    # (the sidecars here carry few tags, one picture saved in many formats is a near-duplicate set,
    # and GIFs are let through the metadata filter so that the decoder meets the animated one)
    res = cli("build", folder, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    kept_ids = [r["source_id"] for r in manifest]
    rejected = {r["source_id"]: r for r in rejects}
    assert sorted(kept_ids + list(rejected)) == sorted(expected)  # exactly one place each
    for name, reason in expected.items():
        if reason is None:
            # decodes fine; a featureless or grey image may still fail a pixel metric or the pair check
            assert name in kept_ids or rejected[name]["stage"] in ("metric", "pair"), (
                name,
                rejected.get(name),
            )
        else:
            assert rejected[name]["reason"] == reason and rejected[name]["stage"] == "decode", name
            assert rejected[name]["detail"]
    tagged = next(r for r in manifest if r["source_id"] == "dots.in.the.name.jpg")
    assert tagged["tags_general"] == ["<script>alert(1)</script>", ">_<", "^_^", "&amp;", "1girl"]
    broken = next(r for r in manifest if r["source_id"] == "cmyk.jpg")
    assert broken["tags_general"][0] == "solo" and broken["tags_general"][-1] == "smile"
    assert rejected["blank white.png"]["reason"] in ("greyscale", "blank")  # first failing metric
    # all but the blank, the smooth 16-bit gradient and the half-transparent webp (flattened onto
    # white it is washed out: sharpness 275 < metrics.min_sharpness 400)
    assert len(kept_ids) >= 6
    assert cli("verify", out).returncode == 0
    for reason in set(filter(None, expected.values())):
        assert reason in res.stdout  # the summary counts rejects by reason


def test_independent_reader_validates_corpus_build(corpus_build, corpus):
    """Only tarfile, PIL, pyarrow, json and hashlib: the contract as an outsider reads it."""
    out, _, res = corpus_build
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    inputs = sorted(os.listdir(corpus))
    assert sorted([r["source_id"] for r in manifest] + [r["source_id"] for r in rejects]) == inputs
    assert all(r["reason"] and r["stage"] for r in rejects)
    build = json.load(open(os.path.join(out, "build.json")))
    assert build["complete"] and build["counts"]["samples"] == len(manifest)
    assert set(build["extractors"]) == {"canny", "xdog"}
    shards = json.load(open(os.path.join(out, "shards.json")))["shards"]
    by_shard = defaultdict(dict)
    for row in manifest:
        by_shard[row["shard"]][row["key"]] = row
    assert {s["path"] for s in shards} == set(by_shard)
    seen = set()
    paper = defaultdict(list)
    for entry in shards:
        path = os.path.join(out, entry["path"])
        data = open(path, "rb").read()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        w, h = map(int, entry["path"].split("/")[1].split("x"))
        samples = defaultdict(dict)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                samples[key][ext] = tar.extractfile(m).read()
        assert set(samples) == set(by_shard[entry["path"]]) and len(samples) == entry["samples"]
        for key, files in samples.items():
            assert key not in seen and "." not in key
            seen.add(key)
            row = by_shard[entry["path"]][key]
            # a drawing that failed the pair check is dropped; the manifest lists those kept
            assert set(row["extractors"]) <= {"canny", "xdog"} and row["extractors"]
            assert set(files) == {"jpg", "json", "txt", *(f"lineart.{x}.png" for x in row["extractors"])}
            assert (row["bucket_w"], row["bucket_h"]) == (w, h)
            img = Image.open(io.BytesIO(files["jpg"]))
            assert img.size == (w, h) and img.mode == "RGB"
            for name in row["extractors"]:
                lines = Image.open(io.BytesIO(files[f"lineart.{name}.png"]))
                assert lines.size == (w, h) and lines.mode == "L"
                hist = lines.histogram()
                paper[name].append(sum(hist[200:]) / (w * h))
                assert sum(hist[:100]) > 0.001 * w * h  # some ink on every drawing
            meta = json.loads(files["json"])
            assert meta["bucket"] == [w, h] and meta["source_id"] == row["source_id"]
            assert not {"weight", "tier", "quality"} & set(meta)  # weight versions only (contract 2)
            # contract 4: the caption; a folder source without sidecars has no tags, so an empty one
            assert files["txt"].decode("utf-8") == ", ".join(
                t.replace("_", " ") for t in meta["tags"]["general"].split()
            )
            left, top, right, bottom = meta["crop_box"]
            ow, oh = meta["original_size"]
            assert 0 <= left < right <= ow and 0 <= top < bottom <= oh
            assert abs((right - left) / (bottom - top) - w / h) < 0.02 * w / h
    for name, fractions in paper.items():  # white paper, black lines: most pixels are paper
        assert sorted(fractions)[len(fractions) // 2] > 0.6, name


def test_rerun_of_finished_build_does_nothing(corpus_build, corpus, ray_cluster):
    out, cfg, _ = corpus_build
    before = open(os.path.join(out, "shards.json")).read()
    res = cli("build", corpus, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0 and "already complete: nothing to do" in res.stdout
    assert open(os.path.join(out, "shards.json")).read() == before


def test_changed_config_is_refused_naming_the_change(corpus_build, corpus, tmp_path, ray_cluster):
    out, _, _ = corpus_build
    cfg = write_config(str(tmp_path / "c.toml"), "[shards]\nsamples_per_shard = 9\n")
    res = cli("build", corpus, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 2
    assert "shards.samples_per_shard: 8 -> 9" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_verify_reports_faults(corpus_build, tmp_path):
    src, _, _ = corpus_build
    out = str(tmp_path / "copy")
    shutil.copytree(src, out)
    assert cli("verify", out).returncode == 0
    shards = json.load(open(os.path.join(out, "shards.json")))["shards"]
    victim = os.path.join(out, shards[0]["path"])
    data = open(victim, "rb").read()
    with open(victim, "wb") as fh:
        fh.write(data[: len(data) // 2])
    os.remove(os.path.join(out, shards[1]["path"]))
    res = cli("verify", out)
    assert res.returncode == 1
    assert f"{shards[0]['path']}: sha256 differs" in res.stdout
    assert f"{shards[1]['path']}: missing" in res.stdout


@pytest.mark.parametrize(
    "config_text, message",
    [
        ("[scan]\nmin_sid = 3\n", "unknown key(s) in [scan]: min_sid"),
        ("[shards\n", "is not valid TOML"),
        ('[[extractors]]\nname = "nope"\n', "unknown extractor 'nope'"),
        ("[buckets]\nstep = -64\n", "bad bucket rule"),
        ("[shards]\nimage_format = 'bmp'\n", "image_format must be"),
        (
            '[[extractors]]\nname = "pidinet"\nweights = "/nonexistent/table5_pidinet.pth"\n',
            "extractor 'pidinet'",
        ),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, corpus, config_text, message):
    cfg = write_config(str(tmp_path / "bad.toml"), config_text)
    res = cli("build", corpus, "--out", str(tmp_path / "o"), "--config", cfg)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_source_and_missing_config(tmp_path):
    res = cli("build", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "source path does not exist" in res.stderr
    res = cli("build", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(tmp_path / "none.toml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_a_build_that_keeps_nothing_still_completes(tmp_path, ray_cluster):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("not an image")
    (folder / "b.jpg").write_bytes(b"")
    out = str(tmp_path / "out")
    res = cli("build", str(folder), "--out", out, address=ray_cluster)
    assert res.returncode == 0, res.stderr
    assert "0 samples in 0 shards" in res.stdout
    assert pq.read_table(os.path.join(out, "rejects.parquet")).num_rows == 2
    assert cli("verify", out).returncode == 0
