"""``linepairs audit``: summary, --json through the loader, a self-contained escaped HTML page in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from .helpers import cli
from .weighted_builds import NASTY_TAGS, shared_build


@pytest.fixture(scope="module")
def build(tmp_path_factory, ray_cluster) -> str:
    return shared_build(tmp_path_factory)


@pytest.fixture(scope="module")
def html_report(build, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("report") / "report.html")
    res = cli("audit", build, "--html", path, "--draws", "50000", "--pairs", "6")
    assert res.returncode == 0, res.stderr
    assert f"report       {path}" in res.stdout
    return path


def test_json_has_intended_and_realised_shares(build):
    res = cli("audit", build, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["draws"] == 200_000 and report["bucket_purity"] == 1.0
    built = json.load(open(os.path.join(build, "build.json")))["weights"]["intended_share"]
    for dim in ("source", "tier", "bucket"):
        assert report["intended"][dim] == pytest.approx(built[dim])
        assert set(report["realised"][dim]) == set(report["intended"][dim])
        assert report["max_abs_error"][dim] < 0.01
    assert report["intended"]["source"] == pytest.approx({"danbooru": 0.5, "research": 0.5})
    assert report["counts"]["source"] == {"danbooru": 24, "research": 8}
    assert report["shard_problems"] == {}
    assert report["tags"]["by_count"][0][:2] == ["1girl", 24]
    # 8 research samples carry half the draws: by weight, their tags would outrank; hatsune_miku (16 of 24
    # danbooru samples) has a third of the weight.
    by_weight = {t: share for t, _, share in report["tags"]["by_weight"]}
    assert by_weight["hatsune_miku"] == pytest.approx(0.5 * 16 / 24, abs=0.05)


def test_terminal_summary(build):
    res = cli("audit", build, "--draws", "20000")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for needle in (
        "samples      32 in",
        "effective sample size",
        "bucket purity 100%",
        "danbooru",
        "research",
        "high",
    ):
        assert needle in out, needle
    assert re.search(r"max \|realised - intended\| = 0\.\d\d%", out)


def test_html_is_self_contained_and_escaped(html_report):
    text = open(html_report, encoding="utf-8").read()
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert len(srcs) == 4 + 6 * 3  # 4 plots; 6 pairs of illustration + canny + xdog
    assert all(s.startswith("data:image/") for s in srcs)
    assert "http://" not in text and "https://" not in text
    assert '<script>alert("x")</script>' not in text  # the tag is shown, never run
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    for tag in NASTY_TAGS:
        assert tag not in re.sub(r"<script>.*?</script>", "", text, flags=re.S) or tag.isalnum()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_renders_in_headless_chromium(html_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: install Debian's 'chromium' (make browser) to run the render test")
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ]
    env = {**os.environ, "HOME": str(tmp_path)}  # chromium wants a writable profile
    shot = str(tmp_path / "shot.png")
    url = "file://" + html_report
    subprocess.run(
        [*flags, "--window-size=1280,2200", f"--screenshot={shot}", url],
        env=env,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*flags, "--dump-dom", url], env=env, capture_output=True, text=True, timeout=120
    ).stdout
    # The page's own check: every image (plots and pairs) decoded in the browser.
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded and loaded.group(1) == loaded.group(2) == str(4 + 6 * 3), loaded and loaded.group(0)
    assert "did not load</p>" not in dom  # the banner the page adds for broken images
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (2200, 1280)
    chroma = image.max(axis=2) - image.min(axis=2)
    top = chroma[: image.shape[0] // 3]  # title and the plots
    assert (top > 60).mean() > 0.01, "no coloured plot bars in the first third of the page"
    assert (image.sum(axis=2) < 600).mean() > 0.02, "the page is nearly blank"


def test_bad_shard_is_named_and_exit_1(build, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(build, out)
    gone = json.load(open(os.path.join(out, "shards.json")))["shards"][1]["path"]
    os.remove(os.path.join(out, gone))
    res = cli("audit", out, "--draws", "5000")
    assert res.returncode == 1
    assert f"BAD SHARD    {gone}: missing" in res.stdout
    res = cli("audit", out, "--json", "--draws", "5000")
    report = json.loads(res.stdout)
    assert report["shard_problems"] == {gone: "missing"}
    # tag counts cover exactly the samples in play: the manifest less the missing shard's rows
    rows = pq.read_table(os.path.join(out, "manifest.parquet"), columns=["shard", "tags"]).to_pylist()
    expected = Counter(t for r in rows if r["shard"] != gone for t in r["tags"])
    assert {t: n for t, n, _ in report["tags"]["by_count"]} == {
        t: expected[t] for t, _, _ in report["tags"]["by_count"]
    }
    assert report["tags"]["by_count"][0][1] == max(expected.values())


def test_not_a_build(tmp_path):
    res = cli("audit", str(tmp_path))
    assert res.returncode == 2 and "not a finished build" in res.stderr and "Traceback" not in res.stderr
