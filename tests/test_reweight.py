"""Weight versions on a real build: reweight changes what the loader draws, never a shard's bytes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from sharding.loader import batches

from .helpers import cli, write_config
from .weighted_builds import NASTY_TAGS, shared_build, weighted_manifest


def _sha256s(out: str) -> dict[str, str]:
    return {
        os.path.relpath(p, out): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in sorted(glob.glob(os.path.join(out, "shards", "**", "*.tar"), recursive=True))
    }


@pytest.fixture
def build(tmp_path_factory, tmp_path, ray_cluster) -> str:
    """A private copy of the shared two-source build (shares 0.5 / 0.5): these tests change its weights."""
    out = str(tmp_path / "out")
    shutil.copytree(shared_build(tmp_path_factory), out)
    return out


def _realised(out: str, draws: int, **options) -> dict[str, float]:
    manifest = {r["key"]: r for r in weighted_manifest(out, options.get("weights"))}
    counts: dict[str, int] = {}
    drawn = 0
    for keys in batches(out, 500, seed=5, keys_only=True, **options):
        for k in keys:
            counts[manifest[k]["source"]] = counts.get(manifest[k]["source"], 0) + 1
        drawn += len(keys)
        if drawn >= draws:
            break
    return {s: n / drawn for s, n in counts.items()}


def test_reweight_changes_realised_shares_and_no_shard_byte(build, tmp_path):
    before = _sha256s(build)
    shards_json = open(os.path.join(build, "shards.json")).read()
    manifest_bytes = open(os.path.join(build, "manifest.parquet"), "rb").read()
    cfg = write_config(str(tmp_path / "w.toml"), "[weights.shares]\ndanbooru = 0.8\nresearch = 0.2\n")

    res = cli("reweight", build, "--config", cfg, "--name", "mix80", "--activate")
    assert res.returncode == 0, res.stderr
    assert "mix80 (active)" in res.stdout and "no shard opened" in res.stdout

    # Intended: exactly the new targets; realised by the loader (default = active) within 1% over 200k draws.
    rows = weighted_manifest(build)
    total = sum(r["weight"] for r in rows)
    intended = {
        s: sum(r["weight"] for r in rows if r["source"] == s) / total for s in ("danbooru", "research")
    }
    assert intended == pytest.approx({"danbooru": 0.8, "research": 0.2})
    realised = _realised(build, 200_000)
    for source, share in intended.items():
        assert abs(realised[source] - share) < 0.01, (source, realised, intended)
    # The old version still exists and still reads as 0.5 / 0.5.
    old = _realised(build, 50_000, weights="v1")
    assert abs(old["danbooru"] - 0.5) < 0.02

    assert _sha256s(build) == before  # every shard byte-identical
    assert open(os.path.join(build, "shards.json")).read() == shards_json
    assert open(os.path.join(build, "manifest.parquet"), "rb").read() == manifest_bytes
    build_json = json.load(open(os.path.join(build, "build.json")))
    assert build_json["weights_active"] == "mix80"
    assert build_json["weights"]["intended_share"]["source"] == pytest.approx(intended)
    assert cli("verify", build).returncode == 0

    # Switching back is an activation, not a solve.
    res = cli("reweight", build, "--name", "v1", "--activate")
    assert res.returncode == 0 and "v1 (active)" in res.stdout, res.stderr
    assert abs(_realised(build, 50_000)["danbooru"] - 0.5) < 0.02


def test_audit_compare_terminal_json_html(build, tmp_path):
    cfg = write_config(str(tmp_path / "w.toml"), "[weights]\nhigh_fraction = 0.5\nhigh_weight = 8.0\n")
    assert cli("reweight", build, "--config", cfg).returncode == 0  # v2, not active
    res = cli("audit", build, "--compare", "v1", "v2", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["a"] == "v1" and report["b"] == "v2"
    for dim in ("source", "tier", "bucket", "tags"):
        assert report["shares"][dim], dim
    for dim in ("source", "tier", "bucket"):
        for col in (1, 2):
            assert sum(row[col] for row in report["shares"][dim]) == pytest.approx(1.0)
    tier = {name: (a, b) for name, a, b in report["shares"]["tier"]}
    assert tier["high"][1] > tier["high"][0]  # more high-tier samples, each weighted 8: more draws
    assert report["versions"]["v2"]["policy"]["high_weight"] == 8.0

    text = cli("audit", build, "--compare", "v1", "v2", "--html", str(tmp_path / "c.html"))
    assert text.returncode == 0 and "v1" in text.stdout and "high" in text.stdout
    page = open(tmp_path / "c.html", encoding="utf-8").read()
    assert "<script>alert" not in page  # tags are escaped
    assert any(t.replace("<", "&lt;").replace(">", "&gt;") in page or "&amp;" in page for t in NASTY_TAGS)
    one = json.loads(cli("audit", build, "--weights", "v2", "--json", "--draws", "20000").stdout)
    assert one["weights_version"] == "v2"
    assert one["intended"]["tier"] == pytest.approx({name: b for name, _, b in report["shares"]["tier"]})
    missing = cli("audit", build, "--compare", "v1", "nope")
    assert missing.returncode == 2 and "no weight version 'nope'" in missing.stderr


def test_pixel_changes_refuse_naming_the_change_and_the_command(build, tmp_path):
    cfg = write_config(
        str(tmp_path / "px.toml"), "[weights]\nhigh_weight = 2.0\n[shards]\nsamples_per_shard = 9\n"
    )
    res = cli("reweight", build, "--config", cfg)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "shards.samples_per_shard" in res.stderr and "--out NEW_OUT" in res.stderr
    assert not os.path.exists(os.path.join(build, "weights", "v2.parquet"))

    bad = write_config(str(tmp_path / "bad.toml"), "[weights.shares]\ndanbooru = 0.5\nother = 0.5\n")
    res = cli("reweight", build, "--config", bad)
    assert res.returncode == 2 and "other=0.5" in res.stderr and "Traceback" not in res.stderr


def test_verify_checks_every_weight_version(build):
    assert cli("reweight", build, "--name", "copy").returncode == 0
    assert cli("verify", build).returncode == 0
    path = os.path.join(build, "weights", "copy.parquet")
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)  # a version that no longer matches the manifest
    res = cli("verify", build)
    assert (
        res.returncode == 1
        and "weights/copy.parquet" in res.stdout
        and "does not match the manifest" in res.stdout
    )


def test_build_with_only_weights_changed_points_to_reweight(build, tmp_path_factory):
    from curation.sources import parse_source
    from pipelines.build.request import BuildRefused, BuildRequest
    from pipelines.build.run import run_build

    from .weighted_builds import make_sources, small_config

    root = str(tmp_path_factory.getbasetemp() / "weighted-build")
    dan, res = make_sources(root)
    sources = [parse_source(f"danbooru={dan}"), parse_source(f"research={res}")]
    changed = small_config(shares={"danbooru": 0.6, "research": 0.4})
    with pytest.raises(BuildRefused, match=r"only its weights changed .*linepairs reweight"):
        run_build(BuildRequest(sources, build, changed, show_progress=False))
    other = small_config(shares={"danbooru": 0.5, "research": 0.5})
    other = type(other)(**{**other.__dict__, "shards": type(other.shards)(samples_per_shard=5)})
    with pytest.raises(BuildRefused, match=r"shards.samples_per_shard.*new --out"):
        run_build(BuildRequest(sources, build, other, show_progress=False))
    # Once a version with exactly that policy is stored, the same request is a finished build.
    from pipelines.tools.reweight import reweight

    reweight(build, changed.weights, name="sixty", activate_it=True)
    summary = run_build(BuildRequest(sources, build, changed, show_progress=False))
    assert summary.already_complete
