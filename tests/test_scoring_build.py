"""A build with learned scorers configured, on CPU, through the real CLI and Ray: the actor stage
fills the scan columns, predictions judge untagged folder images, build.json records the scorers."""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import scorers
from curation.decode import decode_image
from curation.metrics import work_copy
from groundwork.files import sha256_file

from .helpers import cli, write_config
from .scorer_checkpoints import write_aesthetic, write_wd_tagger


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("scorer_weights")
    write_wd_tagger(str(root / "wd"), "vit", seed=11)
    write_aesthetic(str(root / "aesthetic"), seed=5)
    return {"wd_tagger": str(root / "wd"), "aesthetic": str(root / "aesthetic")}


def _rows(table: pa.Table) -> list[dict]:
    """Rows with NaN spelled "nan", so that equal tables compare equal (a PNG has no JPEG quality)."""
    fix = lambda v: "nan" if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    return [{k: fix(v) for k, v in row.items()} for row in table.to_pylist()]


def _work_copies(folder: str) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*"))):
        with open(path, "rb") as fh:
            out[os.path.basename(path)] = work_copy(decode_image(fh.read()).rgb)
    return out


def test_build_with_scorers_fills_columns_and_records_them(small_corpus, weights, tmp_path, ray_cluster):
    # What the tagger predicts for these images, called directly: ban the tag nearest to half of them.
    images = _work_copies(small_corpus)
    tagger = scorers.create("wd_tagger", weights=weights["wd_tagger"], threshold=0.5)
    predicted = dict(zip(images, tagger(list(images.values()))["pred_tags"], strict=True))
    counts = {t: sum(t in p for p in predicted.values()) for p in predicted.values() for t in p}
    banned = min(counts, key=lambda t: (abs(counts[t] - len(images) / 2), t))
    assert 0 < counts[banned] < len(images)

    cfg = write_config(
        str(tmp_path / "b.toml"),
        f'[filters]\nbanned_tags = ["{banned}"]\n'
        f'[scorers.wd_tagger]\nweights = "{weights["wd_tagger"]}"\nthreshold = 0.5\nbatch_size = 3\n'
        f'[scorers.aesthetic]\nweights = "{weights["aesthetic"]}"\n'
        "[shards]\nsamples_per_shard = 4\n",
    )
    out = str(tmp_path / "out")
    res = cli("build", small_corpus, "--out", out, "--config", cfg, address=ray_cluster, timeout=600)
    assert res.returncode == 0, res.stderr

    build = json.load(open(os.path.join(out, "build.json")))
    rec = build["scorers"]
    assert set(rec) == {"wd_tagger", "aesthetic"}
    assert rec["wd_tagger"]["weights_sha256"] == sha256_file(
        os.path.join(weights["wd_tagger"], "model.safetensors")
    )
    assert rec["aesthetic"]["files_sha256"]["sac+logos+ava1-l14-linearMSE.pth"] == sha256_file(
        os.path.join(weights["aesthetic"], "sac+logos+ava1-l14-linearMSE.pth")
    )
    assert rec["wd_tagger"]["version"] and rec["wd_tagger"]["threshold"] == 0.5

    scan = pa.concat_tables(
        [pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "scan", "*.parquet")))]
    )
    rows = {os.path.basename(r["location"]): r for r in scan.to_pylist()}
    scored = [n for n, r in rows.items() if r["pred_tags"] is not None]
    assert scored, "no image reached the scorers"
    aesthetic = scorers.create("aesthetic", weights=weights["aesthetic"])
    direct = dict(zip(scored, aesthetic([images[n] for n in scored])["aesthetic"], strict=True))
    for name in scored:
        row = rows[name]
        assert row["pred_tags"] == predicted[name]  # the actor saw the same pixels
        assert row["aesthetic"] == pytest.approx(direct[name], abs=1e-4)
        assert row["pred_rating"] in ("g", "s", "q", "e")
        assert len(row["pred_tag_probs"]) == len(row["pred_tags"])
        if banned in row["pred_tags"]:
            assert (row["status"], row["stage"], row["reason"]) == (
                "rejected",
                "scorer",
                "predicted_banned_tag",
            )
            assert banned in row["detail"]
        elif row["status"] == "kept":
            assert row["tags_general"] == row["pred_tags"]  # no tags of its own: the predictions fill in
            assert row["quality_score"] is not None
    assert any(banned in rows[n]["pred_tags"] for n in scored) and any(
        rows[n]["status"] == "kept" for n in scored
    ), "the banned tag must split the scored images for this test to mean anything"

    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    assert {os.path.basename(r["location"]) for r in rejects if r["reason"] == "predicted_banned_tag"} == {
        n for n in scored if banned in rows[n]["pred_tags"]
    }
    by_key = {r["key"]: r for r in rows.values()}
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    assert manifest, "nothing kept"
    for m in manifest:  # the samples' tags (tag balancing, W-net vocabulary) are the predictions
        assert m["tags"] == by_key[m["key"]]["pred_tags"] and m["tags_general"] == m["tags"]
    assert cli("verify", out).returncode == 0

    # A build that lost its scan part (killed before the actor wrote it) rescans to the same rows.
    part = sorted(glob.glob(os.path.join(out, "scan", "*.parquet")))[0]
    before = _rows(pq.read_table(part))
    manifest_before = _rows(pq.read_table(os.path.join(out, "manifest.parquet")))
    for path in (part, os.path.join(out, "build.json"), os.path.join(out, "plan.parquet")):
        os.remove(path)
    res = cli("build", small_corpus, "--out", out, "--config", cfg, address=ray_cluster, timeout=600)
    assert res.returncode == 0, res.stderr
    assert _rows(pq.read_table(part)) == before
    assert _rows(pq.read_table(os.path.join(out, "manifest.parquet"))) == manifest_before


def test_bad_scorer_weights_are_one_line_and_exit_2_before_work(tmp_path, corpus):
    cfg = write_config(str(tmp_path / "b.toml"), '[scorers.wd_tagger]\nweights = "/nonexistent/wd"\n')
    out = tmp_path / "o"
    res = cli("build", corpus, "--out", str(out), "--config", cfg)
    assert res.returncode == 2, res.stderr
    assert "scorer 'wd_tagger'" in res.stderr and "/nonexistent/wd" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not os.path.exists(out / "scan") and not os.path.exists(out / "_state" / "records")


@pytest.mark.parametrize(
    "config_text, message",
    [
        (
            "[scorers.clip]\n",
            "[scorers.clip]: unknown scorer; available: aesthetic, anime_classify, anime_real",
        ),
        ("[scorers.wd_tagger]\nthreshhold = 0.3\n", "has no option(s) ['threshhold']"),
        ("[scoring]\ngpu_share = 0\n", "bad [scoring] values"),
    ],
)
def test_bad_scorer_config_is_one_line_and_exit_2(tmp_path, corpus, config_text, message):
    cfg = write_config(str(tmp_path / "bad.toml"), config_text)
    res = cli("build", corpus, "--out", str(tmp_path / "o"), "--config", cfg)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
