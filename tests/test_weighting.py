"""The weight policy: tiers by quantile, source shares met whatever the sizes, tag balancing, clip, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from curation.weighting import (
    HIGH,
    LOW,
    WeightConfig,
    WeightError,
    check_sources,
    compute_weights,
    effective_sample_size,
    high_tier_eligible,
    shares,
    solve_scale,
    tag_factors,
)
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from pipelines.config import ConfigError, config_from_dict

from .helpers import cli, write_config
from .weighted_builds import make_sources, shared_build, small_config, weighted_manifest


def _population(n_a: int, n_b: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sources = np.asarray(["danbooru"] * n_a + ["research"] * n_b, dtype=object)
    keys = np.asarray([f"k{i:06d}" for i in range(n_a + n_b)], dtype=object)
    scores = rng.normal(size=n_a + n_b)
    return sources, keys, scores


@pytest.mark.parametrize("sizes", [(9000, 1000), (500, 20000), (3, 7)])
def test_source_shares_met_whatever_the_sizes(sizes):
    sources, keys, scores = _population(*sizes)
    cfg = WeightConfig(shares={"danbooru": 0.5, "research": 0.5})
    w = compute_weights(cfg, sources=sources, keys=keys, quality_scores=scores)
    got = shares(w.weight, sources)
    assert got["danbooru"] == pytest.approx(0.5, abs=1e-12) and got["research"] == pytest.approx(
        0.5, abs=1e-12
    )
    assert w.weight.mean() == pytest.approx(1.0)
    # Recorded factors reproduce the weight; one source factor per source.
    assert np.allclose(w.tier_weight * w.tag_factor * w.source_factor, w.weight)
    assert len(np.unique(w.source_factor[sources == "danbooru"])) == 1


def test_uneven_shares_and_natural_shares():
    sources, keys, scores = _population(800, 200)
    w = compute_weights(
        WeightConfig(shares={"danbooru": 0.3, "research": 0.7}),
        sources=sources,
        keys=keys,
        quality_scores=scores,
    )
    assert shares(w.weight, sources)["research"] == pytest.approx(0.7)
    # Without shares, every source keeps its natural share (tier weights are per source quantiles).
    w = compute_weights(WeightConfig(), sources=sources, keys=keys, quality_scores=scores)
    assert shares(w.weight, sources)["danbooru"] == pytest.approx(0.8, abs=0.01)


def test_quality_tiers_are_the_top_quantile_of_each_source():
    sources, keys, scores = _population(800, 400)
    w = compute_weights(WeightConfig(high_fraction=0.125), sources=sources, keys=keys, quality_scores=scores)
    for src, n in (("danbooru", 800), ("research", 400)):
        mask = sources == src
        assert (w.tier[mask] == HIGH).sum() == round(0.125 * n)
        # Every high sample scores above every low sample of its source.
        assert scores[mask & (w.tier == HIGH)].min() > scores[mask & (w.tier == LOW)].max()
    assert set(w.tier_weight[w.tier == HIGH]) == {4.0} and set(w.tier_weight[w.tier == LOW]) == {1.0}
    # A high sample is drawn high_weight / low_weight times as often as a low one.
    assert w.weight[w.tier == HIGH][0] / w.weight[w.tier == LOW][0] == pytest.approx(4.0)
    # Global scope: quantiles over all samples together.
    g = compute_weights(WeightConfig(tier_scope="global"), sources=sources, keys=keys, quality_scores=scores)
    assert (g.tier == HIGH).sum() == round(0.125 * 1200)


def test_high_tier_needs_strong_evidence():
    """A top-scoring sample that is doubtfully drawn art, or soft, stays low; its place is not handed down."""
    sources, keys, scores = _population(800, 0)
    cfg = WeightConfig(high_fraction=0.125)
    top = np.argsort(scores)[-100:]
    illustration = np.full(800, 0.95)
    upscale = np.ones(800)
    illustration[top[:10]] = 0.6  # doubtful: stays low
    upscale[top[10:20]] = 1.8  # soft: stays low
    illustration[top[20:30]] = np.nan  # not measured: does not block
    eligible = high_tier_eligible(cfg, illustration, upscale)
    w = compute_weights(cfg, sources=sources, keys=keys, quality_scores=scores, eligible=eligible)
    assert (w.tier == HIGH).sum() == 80 and set(w.tier[top[:20]]) == {LOW}
    assert set(w.tier[top[20:]]) == {HIGH}
    plain = compute_weights(cfg, sources=sources, keys=keys, quality_scores=scores)
    assert set(plain.tier[top]) == {HIGH}


def test_unscored_samples_get_a_constant_weight():
    sources, keys, _ = _population(50, 50)
    w = compute_weights(WeightConfig(), sources=sources, keys=keys, quality_scores=np.full(100, np.nan))
    assert set(w.tier) == {LOW}
    assert np.allclose(w.weight, 1.0)
    assert np.all(np.isnan(w.quality))
    assert effective_sample_size(w.weight) == pytest.approx(100)


def test_tag_balancing_up_weights_rare_tags_capped():
    tags = [["common"]] * 990 + [["rare"]] * 9 + [["unique", "common"]]
    f = tag_factors(tags, threshold=0.1, power=0.5, cap=4.0)
    assert np.all(f[:990] == 1.0)  # a common tag (99%) is above the threshold: no change
    assert f[990] == pytest.approx(np.sqrt(0.1 / 0.009))  # rare: in 9 of 1000 samples
    assert f[-1] == pytest.approx(4.0)  # unique: sqrt(0.1 / 0.001) = 10, capped at 4
    assert tag_factors([[], None], 0.1, 0.5, 4.0).tolist() == [1.0, 1.0]
    assert tag_factors([["a", "a"]] + [["b"]] * 3, 0.5, 1.0, 10.0)[0] == pytest.approx(2.0)  # counted once
    sources, keys, scores = _population(1000, 0)
    w = compute_weights(
        WeightConfig(tag_balance=True, tag_threshold=0.1),
        sources=sources,
        keys=keys,
        quality_scores=scores,
        tags=tags,
    )
    assert np.allclose(w.tag_factor, f)
    assert np.allclose(w.tier_weight * w.tag_factor * w.source_factor, w.weight)


def test_clip_bounds_the_weight_and_shares_still_hold():
    sources, keys, scores = _population(9000, 1000)
    cfg = WeightConfig(shares={"danbooru": 0.5, "research": 0.5}, max_weight=6.0, min_weight=0.5)
    w = compute_weights(cfg, sources=sources, keys=keys, quality_scores=scores)
    assert w.weight.max() <= 6.0 + 1e-12 and w.weight.min() >= 0.5 - 1e-12
    assert np.isclose(w.weight, 6.0).any()  # research's high tier is clipped ...
    assert shares(w.weight, sources)["research"] == pytest.approx(
        0.5, abs=1e-9
    )  # ... and the share still holds


def test_solve_scale_is_exact_and_refuses_the_impossible():
    u = np.asarray([1.0, 1.0, 4.0, 10.0])
    c = solve_scale(u, 8.0, 0.0, 3.0)
    assert np.clip(c * u, 0, 3.0).sum() == pytest.approx(8.0, abs=1e-12)
    with pytest.raises(WeightError, match="clip allows"):
        solve_scale(u, 20.0, 0.0, 3.0)  # 4 samples can hold at most 12


def test_a_share_the_clip_cannot_meet_names_the_source():
    sources, keys, scores = _population(9900, 100)
    cfg = WeightConfig(shares={"danbooru": 0.5, "research": 0.5}, max_weight=10.0)
    with pytest.raises(WeightError, match=r"source 'research' \(share 0.5, 100 of 10000 samples\)"):
        compute_weights(cfg, sources=sources, keys=keys, quality_scores=scores)


def test_shares_for_sources_without_samples_or_without_shares():
    sources, keys, scores = _population(10, 0)
    with pytest.raises(WeightError, match=r"research=0.5 but that source has no kept samples"):
        compute_weights(
            WeightConfig(shares={"danbooru": 0.5, "research": 0.5}),
            sources=sources,
            keys=keys,
            quality_scores=scores,
        )
    with pytest.raises(WeightError, match="'extra'.*not a source of this build"):
        check_sources(WeightConfig(shares={"danbooru": 0.5, "extra": 0.5}), ["danbooru"])
    check_sources(
        WeightConfig(shares={"danbooru": 1.0}), ["danbooru", "research"]
    )  # fine until it keeps samples
    with pytest.raises(WeightError, match="research have samples but no target share"):
        compute_weights(
            WeightConfig(shares={"danbooru": 1.0}),
            sources=np.array(["danbooru"] * 5 + ["research"] * 5, dtype=object),
            keys=np.array([f"k{i}" for i in range(10)], dtype=object),
            quality_scores=np.arange(10.0),
        )


@pytest.mark.parametrize(
    "weights, message",
    [
        (
            {"shares": {"danbooru": 0.5, "research": 0.4}},
            r"sum to 0.9 \(danbooru=0.5, research=0.4\); they must sum to 1",
        ),
        ({"shares": {"danbooru": 1.5, "research": -0.5}}, r"weights.shares.research is negative"),
        ({"shares": {"danbooru": 1.0, "research": 0}}, r"weights.shares.research is 0"),
        ({"shares": {"danbooru": "half"}}, r"weights.shares.danbooru must be a number"),
        ({"high_weight": -1.0}, r"weights.high_weight must be > 0, got -1.0"),
        ({"low_weight": 0}, r"weights.low_weight must be > 0"),
        ({"high_fraction": 1.5}, r"weights.high_fraction must be in \[0, 1\]"),
        ({"high_max_upscale": 0.5}, r"weights.high_max_upscale must be >= 1"),
        ({"max_weight": 0.5}, r"must contain 1"),
        ({"min_weight": -1.0}, r"must be >= 0"),
        ({"tier_scope": "planet"}, r"tier_scope"),
        ({"tag_categories": ["characters"]}, r"tag_categories"),
        ({"training_samples": 0}, r"training_samples"),
    ],
)
def test_bad_weight_config_says_which(weights, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"weights": weights})


def test_weight_config_from_toml_table():
    cfg = config_from_dict(
        {"weights": {"shares": {"danbooru": 0.5, "research": 0.5}, "tag_balance": True, "max_weight": 20}}
    )
    assert cfg.weights.shares == {"danbooru": 0.5, "research": 0.5}
    assert cfg.weights.max_weight == 20.0 and cfg.weights.tag_balance is True


def test_build_records_factors_and_states_shares(tmp_path_factory, ray_cluster):
    out = shared_build(tmp_path_factory)
    manifest = weighted_manifest(out)
    for row in manifest:
        assert row["weight"] == pytest.approx(row["tier_weight"] * row["tag_factor"] * row["source_factor"])
    w = np.asarray([r["weight"] for r in manifest])
    src = [r["source"] for r in manifest]
    assert shares(w, src) == pytest.approx({"danbooru": 0.5, "research": 0.5})
    assert {r["tier"] for r in manifest} == {HIGH, LOW}
    summary = json.load(open(os.path.join(out, "build.json")))["weights"]
    assert summary["intended_share"]["source"] == pytest.approx({"danbooru": 0.5, "research": 0.5})
    assert set(summary["intended_share"]["tier"]) == {HIGH, LOW}
    assert sum(summary["intended_share"]["bucket"].values()) == pytest.approx(1.0)
    assert summary["effective_sample_size"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-3)
    draws = summary["expected_draws"]
    assert draws["training_samples"] == 1_000_000
    assert draws["max"] == pytest.approx(1_000_000 * w.max() / w.sum())
    # Each research sample (8 of 32) carries 1/16 of the draws.
    research = [r for r in manifest if r["source"] == "research"]
    assert draws["max"] >= 1_000_000 * 0.5 / len(research) * 0.999


def test_share_for_a_source_whose_inputs_are_all_rejected(tmp_path, ray_cluster):
    import cv2

    dan, _ = make_sources(str(tmp_path))
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    cv2.imwrite(str(tiny / "a.png"), np.zeros((20, 20, 3), np.uint8))  # under scan.min_side: rejected
    from curation.sources import parse_source

    req = BuildRequest(
        [parse_source(f"danbooru={dan}"), parse_source(f"tiny={tiny}")],
        str(tmp_path / "out"),
        small_config(shares={"danbooru": 0.5, "tiny": 0.5}),
        show_progress=False,
    )
    with pytest.raises(ConfigError, match=r"tiny=0.5 but that source has no kept samples"):
        run_build(req)


def test_cli_refuses_bad_shares_before_anything_runs(tmp_path, ray_cluster):
    dan, res = make_sources(str(tmp_path))
    bad = write_config(str(tmp_path / "b.toml"), "[weights.shares]\ndanbooru = 0.5\nresearch = 0.6\n")
    out = str(tmp_path / "out")
    r = cli("build", f"danbooru={dan}", f"research={res}", "--out", out, "--config", bad, address=ray_cluster)
    assert r.returncode == 2 and "weights.shares sum to 1.1" in r.stderr and "Traceback" not in r.stderr
    unknown = write_config(str(tmp_path / "u.toml"), "[weights.shares]\ndanbooru = 0.5\nother = 0.5\n")
    r = cli("build", f"danbooru={dan}", "--out", out, "--config", unknown, address=ray_cluster)
    assert r.returncode == 2 and "'other'" in r.stderr and "not a source of this build" in r.stderr
    assert not os.path.exists(out) or not os.listdir(out)  # refused before anything was written
