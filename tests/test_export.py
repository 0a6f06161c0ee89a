"""``linepairs export`` on real builds: each target's files against its trainer's documented naming
rules (kohya sd-scripts, SimpleTuner, ai-toolkit; diffusers through HF ``load_dataset``), drawings
chosen, fallen back or left out (never a gap), captions by the one rule, polarity, weights as
repeats with their realised shares, resume after SIGKILL to the same files, refusals.

The trainers' own code reading these exports: tests/test_export_trainers.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.sources import parse_source
from lineart.quality import PairQuality
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from pipelines.export import ExportRequest, run_export
from sharding.captions import CaptionRule, caption_of_row
from sharding.loader import batches

from .export_builds import corpus_two_sources
from .helpers import REPO, cli
from .test_object_storage import s3  # noqa: F401  (the moto server fixture)
from .weighted_builds import make_sources, shared_build, small_config

AI_TOOLKIT_EXTS = (".jpg", ".jpeg", ".png", ".webp")  # toolkit/dataloader_mixins.py img_ext_list


@pytest.fixture(scope="module")
def build(tmp_path_factory, ray_cluster) -> str:
    return shared_build(tmp_path_factory)


@pytest.fixture(scope="module")
def dropped_build(tmp_path_factory, ray_cluster) -> str:
    """The two generated sources with a pair-quality check that drops the inkier XDoG drawings (about
    half of them): samples with canny only."""
    root = str(tmp_path_factory.mktemp("dropped"))
    dan, res = make_sources(root)
    cfg = dataclasses.replace(
        small_config(shares={"danbooru": 0.5, "research": 0.5}), pair_quality=PairQuality(max_ink=0.07)
    )
    out = os.path.join(root, "out")
    run_build(BuildRequest([parse_source(f"danbooru={dan}"), parse_source(f"research={res}")], out, cfg,
                           show_progress=False))  # fmt: skip
    return out


def export(out: str, dest: str, target: str, **options) -> dict:
    run_export(ExportRequest(out, dest, target, show_progress=False, **options))
    return json.load(open(os.path.join(dest, "export.json")))


def manifest(out: str) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()}


def samples(dest: str) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(os.path.join(dest, "samples.parquet")).to_pylist()}


def shard_drawings(out: str, keys: list[str]) -> dict[str, dict[str, np.ndarray]]:
    stream = batches(out, 8, resampled=False)
    return {s["key"]: s["lines"] for s in stream.samples(keys)}


def gray(path: str) -> np.ndarray:
    return cv2.imread(path, cv2.IMREAD_GRAYSCALE)


def files_of(dest: str) -> dict[str, str]:
    """Relative path -> sha256 of every file of an export but its resume bookkeeping."""
    found = {}
    for root, dirs, names in os.walk(dest):
        dirs[:] = [d for d in dirs if d != "_export"]
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, dest)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def realised_from(rows: dict[str, dict], dim: str) -> dict[str, float]:
    train = [r for r in rows.values() if r["fate"] == "train"]
    total = sum(r["repeats"] for r in train)
    out: dict[str, float] = {}
    for r in train:
        out[r[dim]] = out.get(r[dim], 0.0) + r["repeats"] / total
    return out


# ---------------------------------------------------------------- kohya


def test_kohya_folders_dataset_toml_captions_and_shares(build, tmp_path):
    dest = str(tmp_path / "kohya")
    report = export(build, dest, "kohya", val=2)
    rows, man = samples(dest), manifest(build)
    assert set(rows) == set(man)  # every sample of the build has its row, whatever its fate
    config = tomllib.load(open(os.path.join(dest, "dataset.toml"), "rb"))
    (dataset,) = config["datasets"]
    assert dataset["enable_bucket"] and dataset["bucket_no_upscale"] and dataset["bucket_reso_steps"] == 32
    w, h = dataset["resolution"]
    assert all(r["bucket_w"] * r["bucket_h"] <= w * h for r in man.values())  # every bucket kept as is
    in_subsets = set()
    for subset in dataset["subsets"]:
        images = sorted(f for f in os.listdir(subset["image_dir"]) if f.endswith(".jpg"))
        conds = sorted(os.listdir(subset["conditioning_data_dir"]))
        # sd-scripts pairs by stem and refuses missing and extra conditioning files
        assert [os.path.splitext(f)[0] for f in images] == [os.path.splitext(f)[0] for f in conds]
        for name in images:
            key = os.path.splitext(name)[0]
            row = rows[key]
            in_subsets.add(key)
            assert (row["repeats"], row["keep_tokens"]) == (subset["num_repeats"], subset["keep_tokens"])
            image = cv2.imread(os.path.join(subset["image_dir"], name))
            cond = gray(os.path.join(subset["conditioning_data_dir"], f"{key}.png"))
            assert image.shape[:2] == cond.shape == (man[key]["bucket_h"], man[key]["bucket_w"])
            text = caption_of_row(man[key], CaptionRule()).text
            sidecar = os.path.join(subset["image_dir"], f"{key}.txt")
            if text:  # sd-scripts stops on an empty caption file: a sample without tags has none
                assert open(sidecar, encoding="utf-8").read() == text == row["caption"]
            else:
                assert not os.path.exists(sidecar)
    train = {k for k, r in rows.items() if r["fate"] == "train"}
    assert in_subsets == train and len(train) == len(man) - 2
    held = sorted(k for k, r in rows.items() if r["fate"] == "validation")
    assert len(held) == 2 and sorted(os.listdir(os.path.join(dest, "validation", "conditioning"))) == [
        f"{k}.png" for k in held
    ]
    # polarity: white lines on black, the shard's drawing inverted pixel for pixel
    key = sorted(train)[0]
    stored = shard_drawings(build, [key])[key]["canny"]
    assert np.array_equal(gray(os.path.join(dest, rows[key]["conditioning"])), 255 - stored)
    # the weights as repeats: realised shares from the files equal export.json's, near the intended
    for dim in ("source", "tier", "bucket"):
        got = realised_from(rows, dim)
        for name, share in report["shares"][dim].items():
            assert share["realised"] == pytest.approx(got.get(name, 0.0), abs=1e-8)
            assert abs(share["realised"] - share["intended"]) < 0.02
    assert report["counts"]["train"] == len(train) and report["repeats"]["draws"] == sum(
        rows[k]["repeats"] for k in train
    )
    readme = open(os.path.join(dest, "README.md")).read()
    assert "train_control_net.py" in readme and os.path.join(dest, "dataset.toml") in readme
    # the test build's buckets (192x288) are smaller than SD 1.x's 512x512: said, with the preset
    assert any('preset = "sd15"' in w for w in report["warnings"]) and 'preset = "sd15"' in readme


# ---------------------------------------------------------------- SimpleTuner


def test_simpletuner_pairs_by_the_same_file_name_with_its_extension(build, tmp_path):
    dest = str(tmp_path / "st")
    export(build, dest, "simpletuner")
    rows = samples(dest)
    backends = json.load(open(os.path.join(dest, "multidatabackend.json")))
    by_id = {b["id"]: b for b in backends}
    images = [b for b in backends if b["dataset_type"] == "image"]
    assert images and any(b["dataset_type"] == "text_embeds" and b["default"] for b in backends)
    most = max(len(os.listdir(b["instance_data_dir"])) // 2 * (b["repeats"] + 1) for b in images)
    seen = set()
    for b in images:
        cond = by_id[b["conditioning_data"]]
        assert cond["dataset_type"] == "conditioning" and b["caption_strategy"] == "textfile"
        names = sorted(f for f in os.listdir(b["instance_data_dir"]) if not f.endswith(".txt"))
        # DATALOADER.md / sampler.py: the conditioning image is the same path in the other folder
        assert names == sorted(os.listdir(cond["instance_data_dir"]))
        for name in names:
            key, ext = os.path.splitext(name)
            assert ext == ".png"
            seen.add(key)
            # SimpleTuner's repeats: extra passes (0 = once), kohya's count minus one
            assert rows[key]["repeats"] == b["repeats"] + 1
            # textfile: every image has its .txt (a missing one is an error there; empty is allowed)
            assert (
                open(os.path.join(b["instance_data_dir"], f"{key}.txt"), encoding="utf-8").read()
                == rows[key]["caption"]
            )
            a = cv2.imread(os.path.join(b["instance_data_dir"], name))
            assert a.shape[:2] == gray(os.path.join(cond["instance_data_dir"], name)).shape
        # probability: the dataset's draws per epoch, so all datasets run out together
        assert b["probability"] == pytest.approx(len(names) * (b["repeats"] + 1) / most, rel=1e-6)
    assert seen == {k for k, r in rows.items() if r["fate"] == "train"}
    key = sorted(seen)[0]  # the illustration, decoded from the shard's JPEG, is the same pixels
    stream = batches(build, 8, resampled=False)
    (sample,) = stream.samples([key])
    png = cv2.cvtColor(cv2.imread(os.path.join(dest, rows[key]["image"])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(png, sample["image"])


# ---------------------------------------------------------------- ai-toolkit


def test_ai_toolkit_pairs_by_stem_in_control_path(build, tmp_path):
    yaml = pytest.importorskip("yaml")
    dest = str(tmp_path / "ait")
    report = export(build, dest, "ai-toolkit", caption_order="general,character", underscores=True)
    rows, man = samples(dest), manifest(build)
    datasets = yaml.safe_load(open(os.path.join(dest, "datasets.yaml")))["datasets"]
    seen = set()
    for d in datasets:
        assert isinstance(d["num_repeats"], int) and d["num_repeats"] >= 1 and d["caption_ext"] == "txt"
        folder, control = d["folder_path"], d["control_path"]
        assert not os.path.commonpath([folder, control]) == folder  # the walk would train on controls
        for root, _, names in os.walk(folder):  # as toolkit/data_loader.py finds images
            for name in names:
                if not name.lower().endswith(AI_TOOLKIT_EXTS):
                    continue
                stem = os.path.splitext(name)[0]
                found = [e for e in AI_TOOLKIT_EXTS if os.path.exists(os.path.join(control, stem + e))]
                assert found == [".png"], name
                seen.add(stem)
                assert (
                    rows[stem]["repeats"] == d["num_repeats"]
                    and rows[stem]["keep_tokens"] == d["keep_tokens"]
                )
                want = caption_of_row(man[stem], CaptionRule(("general", "character"), underscores=True)).text
                caption = os.path.join(root, stem + ".txt")
                assert (open(caption, encoding="utf-8").read() if os.path.exists(caption) else "") == want
    assert seen == {k for k, r in rows.items() if r["fate"] == "train"}
    # black ink on white by default: the shard's PNG, byte for byte
    key = sorted(seen)[0]
    stored = shard_drawings(build, [key])[key]["canny"]
    assert np.array_equal(gray(os.path.join(dest, rows[key]["conditioning"])), stored)
    assert report["drawings"]["polarity"] == "black_on_white"
    assert report["options"]["caption_rule"]["order"] == ["general", "character"]
    assert report["resolution"] == 1024 and any('preset = "sdxl"' in w for w in report["warnings"])


# ---------------------------------------------------------------- diffusers


def test_diffusers_load_dataset_gives_the_draw_list_and_a_card_that_names_it(build, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    dest = str(tmp_path / "dest")
    cache = str(tmp_path / "hf")
    report = export(build, dest, "diffusers", val=3)
    rows = samples(dest)
    ds = datasets.load_dataset(dest, cache_dir=cache)
    assert set(ds) == {"train", "validation"} and ds["validation"].num_rows == 3
    train = ds["train"]
    assert (
        train.num_rows
        == report["repeats"]["draws"]
        == sum(r["repeats"] for r in rows.values() if r["fate"] == "train")
    )
    assert {"image", "conditioning_image", "text"} <= set(train.column_names)
    counts: dict[str, int] = {}
    for row in train:
        assert (
            row["image"] is not None
            and row["conditioning_image"] is not None
            and isinstance(row["text"], str)
        )
        assert row["image"].size == row["conditioning_image"].size
        assert row["text"] == rows[row["key"]]["caption"]
        counts[row["key"]] = counts.get(row["key"], 0) + 1
    assert counts == {k: r["repeats"] for k, r in rows.items() if r["fate"] == "train"}  # weights as rows
    # Another export into the same folder: the card's fingerprint changes, so HF does not serve the old rows
    import shutil

    shutil.rmtree(dest)
    again = export(build, dest, "diffusers", val=1)
    assert datasets.load_dataset(dest, cache_dir=cache)["train"].num_rows == again["repeats"]["draws"]
    assert again["facts"]["rows_sha256"] != report["facts"]["rows_sha256"]


# ---------------------------------------------------------------- drawings


def test_dropped_drawings_fall_back_or_are_left_out_and_counted(dropped_build, tmp_path, monkeypatch):
    man = manifest(dropped_build)
    without_xdog = {k for k, r in man.items() if "xdog" not in r["extractors"]}
    assert 0 < len(without_xdog) < len(man), "the pair check must drop some XDoG drawings"
    only = export(dropped_build, str(tmp_path / "only"), "kohya", extractor="xdog")
    rows = samples(str(tmp_path / "only"))
    assert {k for k, r in rows.items() if r["fate"] == "left_out"} == without_xdog
    assert all(rows[k]["reason"] == "no_drawing" and rows[k]["image"] == "" for k in without_xdog)
    assert (
        only["counts"]["left_out"]["no_drawing"] == len(without_xdog) == only["drawings"]["cases"]["left_out"]
    )
    assert abs(only["max_abs_error"]["source"]) < 0.02  # the rest of each cell carries the lost draws

    fallback = export(dropped_build, str(tmp_path / "fallback"), "kohya", extractor="xdog,canny=0")
    rows = samples(str(tmp_path / "fallback"))
    assert fallback["drawings"]["cases"] == {"first_choice": len(man) - len(without_xdog),
                                             "fallback": len(without_xdog), "left_out": 0}  # fmt: skip
    assert {k for k, r in rows.items() if r["extractor"] == "canny"} == without_xdog
    drawings = shard_drawings(dropped_build, sorted(man))
    for key, row in rows.items():
        written = gray(os.path.join(str(tmp_path / "fallback"), row["conditioning"]))
        assert np.array_equal(written, 255 - drawings[key][row["extractor"]])

    mix = export(dropped_build, str(tmp_path / "mix"), "kohya", extractor="canny,xdog", seed=3)
    rows = samples(str(tmp_path / "mix"))
    assert mix["drawings"]["written"]["xdog"] > 0 and mix["drawings"]["written"]["canny"] > 0
    assert all(r["extractor"] == "canny" for k, r in rows.items() if k in without_xdog)
    again = export(dropped_build, str(tmp_path / "mix2"), "kohya", extractor="canny,xdog", seed=3)
    assert again["drawings"] == mix["drawings"]  # seeded: the same choice per sample every time

    # diffusers never sees a None drawing: the script's .convert("RGB") would crash on it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    dest = str(tmp_path / "hf")
    export(dropped_build, dest, "diffusers", extractor="xdog")
    ds = datasets.load_dataset(dest, split="train", cache_dir=str(tmp_path / "hfc"))
    assert all(c is not None for c in ds["conditioning_image"])
    assert set(ds["key"]) == set(man) - without_xdog


# ---------------------------------------------------------------- resume and refusals


def test_a_killed_export_resumes_to_the_same_files(corpus, ray_cluster, tmp_path_factory, tmp_path):
    out = corpus_two_sources(corpus, tmp_path_factory)
    reference = str(tmp_path / "reference")
    export(out, reference, "simpletuner", val=2)
    dest = str(tmp_path / "dest")
    args = [sys.executable, "-m", "pipelines.cli", "export", out, dest, "--to", "simpletuner", "--val", "2",
            "--workers", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    markers = os.path.join(dest, "_export", "shards")
    deadline = time.monotonic() + 120
    while (
        not (os.path.isdir(markers) and os.listdir(markers))
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    assert proc.poll() is None, "the export finished before it could be killed"
    proc.send_signal(signal.SIGKILL)  # after its first shard, in the middle of the next
    proc.communicate()
    assert not os.path.exists(os.path.join(dest, "export.json"))
    # as a machine crash can leave it: a file of a finished shard renamed into place but empty
    marker = json.load(open(os.path.join(markers, sorted(os.listdir(markers))[0])))
    emptied = os.path.join(dest, sorted(marker["files"])[0])
    open(emptied, "wb").close()
    res = cli("export", out, dest, "--to", "simpletuner", "--val", "2", "-q")
    assert res.returncode == 0, res.stderr
    mine, theirs = files_of(dest), files_of(reference)
    assert set(mine) == set(theirs)
    for rel, digest in theirs.items():
        if rel in ("multidatabackend.json", "README.md", "export.json"):  # they name their own folder
            text = open(os.path.join(reference, rel)).read().replace(reference, dest)
            assert open(os.path.join(dest, rel)).read() == text, rel
        else:
            assert mine[rel] == digest, rel
    res = cli("export", out, dest, "--to", "simpletuner", "--val", "2", "-q")
    assert res.returncode == 0 and "already complete: nothing to do" in res.stdout


def test_dest_with_another_export_or_other_files_is_refused(build, tmp_path):
    dest = str(tmp_path / "dest")
    assert cli("export", build, dest, "--to", "kohya", "-q").returncode == 0
    for args, change in (
        (["--to", "kohya", "--val", "1"], "options.val: 0 -> 1"),
        (["--to", "diffusers"], "target: 'kohya' -> 'diffusers'"),
        (["--to", "kohya", "--no-invert"], "options.invert: True -> False"),
    ):
        res = cli("export", build, dest, *args, "-q")
        assert res.returncode == 2 and change in res.stderr and "holds another export" in res.stderr, (
            res.stderr
        )
        assert len(res.stderr.strip().splitlines()) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    res = cli("export", build, str(other), "--to", "kohya", "-q")
    assert res.returncode == 2 and "is not a linepairs export" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--weights", "v9"], "no weight version 'v9'"), (["--extractor", "hed"], "not in this build"),
     (["--val", "1000"], "--val 1000: the build has only"), (["--caption-order", "general,nsfw"], "unknown category"),
     (["--repeat-levels", "0"], "--repeat-levels >= 1")],
)  # fmt: skip
def test_bad_requests_are_one_line_and_exit_2(build, tmp_path, args, message):
    res = cli("export", build, str(tmp_path / "dest"), "--to", "kohya", *args, "-q")
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_not_a_build_and_dest_inside_out_are_refused(build, tmp_path):
    res = cli("export", str(tmp_path), str(tmp_path / "dest"), "--to", "kohya")
    assert res.returncode == 2 and "is not a finished build" in res.stderr
    res = cli("export", build, os.path.join(build, "exported"), "--to", "kohya")
    assert res.returncode == 2 and "is inside OUT" in res.stderr


def test_a_truncated_shard_is_refused_by_name(build, tmp_path):
    import shutil

    copy = str(tmp_path / "out")
    shutil.copytree(build, copy)
    entry = json.load(open(os.path.join(copy, "shards.json")))["shards"][0]
    with open(os.path.join(copy, entry["path"]), "r+b") as fh:
        fh.truncate(entry["bytes"] // 2)
    res = cli("export", copy, str(tmp_path / "dest"), "--to", "kohya", "-q")
    assert res.returncode == 2 and entry["path"] in res.stderr and "truncated" in res.stderr, res.stderr
    assert not os.path.exists(tmp_path / "dest")  # refused before DEST is touched


def test_another_weight_version_is_exported_with_its_shares(build, tmp_path):
    from curation.weighting import WeightConfig
    from pipelines.tools.reweight import reweight
    from sharding.layout import Layout

    copy = str(tmp_path / "out")
    import shutil

    shutil.copytree(build, copy)
    reweight(Layout(copy), WeightConfig(shares={"danbooru": 0.8, "research": 0.2}), name="skewed")
    report = export(copy, str(tmp_path / "dest"), "kohya", weights="skewed")
    assert report["weights"]["version"] == "skewed"
    assert report["shares"]["source"]["danbooru"]["intended"] == pytest.approx(0.8)
    assert abs(report["shares"]["source"]["danbooru"]["realised"] - 0.8) < 0.02


# ---------------------------------------------------------------- URLs


def test_export_from_and_to_object_storage_equals_the_local_one(s3, build, tmp_path):  # noqa: F811
    import boto3

    client = boto3.client("s3")
    bucket = "linepairs-test"
    for root, _, names in os.walk(build):  # OUT on the store too
        for name in names:
            path = os.path.join(root, name)
            client.upload_file(path, bucket, "exp-out/" + os.path.relpath(path, build))
    local = str(tmp_path / "local")
    export(build, local, "kohya", val=1)
    res = cli(
        "export", f"s3://{bucket}/exp-out", f"s3://{bucket}/exp-dest", "--to", "kohya", "--val", "1", "-q"
    )
    assert res.returncode == 0, res.stderr
    remote = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="exp-dest/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len("exp-dest/") :]
            if not rel.startswith("_export/"):
                data = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                remote[rel] = hashlib.sha256(data).hexdigest()
    mine = files_of(local)
    assert set(remote) == set(mine)
    for rel in mine:
        if rel not in ("dataset.toml", "README.md", "export.json"):  # they name DEST
            assert remote[rel] == mine[rel], rel
    toml_text = client.get_object(Bucket=bucket, Key="exp-dest/dataset.toml")["Body"].read().decode()
    assert f"s3://{bucket}/exp-dest/images/" in toml_text  # paths name the store; README says to sync it


def test_a_contract_3_build_is_exported_with_captions_from_its_json(build, tmp_path):
    """Builds made before contract 4 have no txt member: the caption comes from the json's tags."""
    import io
    import shutil
    import tarfile

    old = str(tmp_path / "old")
    shutil.copytree(build, old)
    entries = json.load(open(os.path.join(old, "shards.json")))["shards"]
    for entry in entries:
        path = os.path.join(old, entry["path"])
        buf = io.BytesIO()
        with tarfile.open(path) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
            for info in src.getmembers():
                if not info.name.endswith(".txt"):
                    dst.addfile(info, src.extractfile(info))
        open(path, "wb").write(buf.getvalue())
        entry["bytes"], entry["sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    json.dump({"shards": entries}, open(os.path.join(old, "shards.json"), "w"))
    # as a contract-3 build was written: no integrity records (files, checksum) and no committed copy
    info = json.load(open(os.path.join(old, "build.json")))
    info = {k: v for k, v in info.items() if k not in ("files", "checksum")}
    json.dump({**info, "contract": 3}, open(os.path.join(old, "build.json"), "w"))
    os.remove(os.path.join(old, "_state", "build.json"))
    dest = str(tmp_path / "dest")
    report = export(old, dest, "kohya")
    assert report["source"]["contract"] == 3
    man, rows = manifest(old), samples(dest)
    for key, row in rows.items():
        assert row["caption"] == caption_of_row(man[key], CaptionRule()).text
