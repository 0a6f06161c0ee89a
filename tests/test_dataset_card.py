"""OUT's HF dataset card names its build (sha256 of shards.json), so ``load_dataset(OUT)`` never serves
the cached rows of another build with the same folder name, nor of the same build before an append.

HF ``datasets`` caches a local folder under its name and a hash of the card's YAML: first the test
shows that two builds whose cards are equal do share a cache entry (the bug), then that the cards
linepairs writes keep them apart, through a real ``--append`` too.
"""

from __future__ import annotations

import os

import cv2
import pyarrow.parquet as pq
import pytest

from curation.sources import parse_source
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from sharding.samplejson import dataset_card

from .conftest import gradient_image
from .weighted_builds import make_sources, small_config


@pytest.fixture
def offline_hf(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("datasets")


def _build(root: str, n_danbooru: int, n_research: int, append: bool = False) -> str:
    """A build in ROOT/out (every build of this test has the folder name ``out``)."""
    dan, res = make_sources(root, n_danbooru, n_research)
    sources = [parse_source(f"danbooru={dan}"), parse_source(f"research={res}")]
    out = os.path.join(root, "out")
    cfg = small_config(shares={"danbooru": 0.5, "research": 0.5})
    run_build(BuildRequest(sources, out, cfg, show_progress=False, append=append))
    return out


def _samples(out: str) -> int:
    return pq.read_metadata(os.path.join(out, "manifest.parquet")).num_rows


def test_two_builds_with_one_folder_name_load_their_own_rows(tmp_path, ray_cluster, offline_hf):
    datasets = offline_hf
    small = _build(str(tmp_path / "a"), 3, 2)
    big = _build(str(tmp_path / "b"), 9, 3)
    assert _samples(small) != _samples(big)

    # The bug: with equal cards (as before contract 4) the second folder "out" is served from the
    # first one's cache entry.
    cards = {out: open(os.path.join(out, "README.md")).read() for out in (small, big)}
    for out in (small, big):
        with open(os.path.join(out, "README.md"), "w") as fh:
            fh.write(dataset_card(["canny", "xdog"], "jpg", False, fingerprint="same"))
    stale = str(tmp_path / "stale-cache")
    assert datasets.load_dataset(small, split="train", cache_dir=stale).num_rows == _samples(small)
    assert datasets.load_dataset(big, split="train", cache_dir=stale).num_rows == _samples(small)  # wrong

    # The fix: each card names its build.
    for out, text in cards.items():
        with open(os.path.join(out, "README.md"), "w") as fh:
            fh.write(text)
    assert cards[small] != cards[big]
    cache = str(tmp_path / "cache")
    for out in (small, big, small):
        ds = datasets.load_dataset(out, split="train", cache_dir=cache)
        assert ds.num_rows == _samples(out)
        assert all(isinstance(t, str) for t in ds["txt"])  # the caption member (contract 4)


def test_an_append_rewrites_the_card_and_load_dataset_sees_the_new_rows(tmp_path, ray_cluster, offline_hf):
    datasets = offline_hf
    root = str(tmp_path / "grow")
    out = _build(root, 4, 2)
    before = open(os.path.join(out, "README.md")).read()
    cache = str(tmp_path / "cache")
    assert datasets.load_dataset(out, split="train", cache_dir=cache).num_rows == _samples(out)
    research = os.path.join(root, "research")
    for i in range(3):  # new inputs in an existing source
        cv2.imwrite(os.path.join(research, f"new{i}.png"), gradient_image(288, 192, seed=500 + i)[:, :, ::-1])
    grown = _samples(out)
    _build(root, 4, 2, append=True)
    assert _samples(out) == grown + 3
    assert open(os.path.join(out, "README.md")).read() != before
    assert datasets.load_dataset(out, split="train", cache_dir=cache).num_rows == grown + 3
