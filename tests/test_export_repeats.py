"""Weights into whole repeats (pipelines/export/repeats.py), the drawing choice and the weights a
held-out sample leaves to its cell: pure functions, checked on many seeded weight sets."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.export.drawings import FALLBACK, FIRST, LEFT_OUT, DrawingChoice, DrawingError, key_uniforms
from pipelines.export.plan import carried_weights
from pipelines.export.repeats import MAX_DRAWS_PER_SAMPLE, MIN_DRAWS, grid, max_error, share_table, solve


def _policy(rng, n_a: int, n_b: int, share_a: float, tag_balance: bool = False):
    """Weights as the build's policy makes them: tiers x source factor (x a tag factor), mean 1."""
    n = n_a + n_b
    source = np.array(["a"] * n_a + ["b"] * n_b, dtype=object)
    tier = np.where(rng.random(n) < 0.125, "high", "low").astype(object)
    u = np.where(tier == "high", 4.0, 1.0)
    if tag_balance:
        u *= np.minimum(4.0, np.exp(rng.exponential(0.4, n)))
    w = u.copy()
    for s, share in (("a", share_a), ("b", 1 - share_a)):
        m = source == s
        w[m] *= share * n / u[m].sum()
    return w / w.mean(), source, tier


@pytest.mark.parametrize("seed", range(12))
def test_shares_survive_rounding_to_a_few_repeat_counts(seed):
    rng = np.random.default_rng(seed)
    n_a, n_b = int(rng.integers(5, 3000)), int(rng.integers(5, 800))
    w, source, tier = _policy(rng, n_a, n_b, float(rng.uniform(0.1, 0.9)), tag_balance=bool(seed % 2))
    order = np.lexsort((np.arange(len(w)), w, tier, source))
    for levels in (8, 3, None):
        r = solve(w, order, levels)
        assert levels is None or len(r.levels) <= levels
        assert r.counts.min() >= 1 and r.draws >= MIN_DRAWS  # nobody dropped; a small build scaled up
        error = max_error(share_table(w, r.counts, {"source": source, "tier": tier}))
        assert error["source"] < 0.01 and error["tier"] < 0.01, (levels, error)
    exact = solve(w, order, None)
    lightest = w == w.min()
    assert np.all(exact.counts[lightest] == exact.counts[lightest][0])  # equal weights, equal counts here


def test_the_lightest_sample_once_when_the_build_is_large():
    w = np.array([1.0, 2.0, 3.0, 4.0] * 500)
    r = solve(w, np.argsort(w, kind="stable"), 8)
    assert r.scale == 1 and sorted(set(r.counts.tolist())) == [1, 2, 3, 4] and r.levels == (1, 2, 3, 4)


def test_weight_zero_is_never_drawn_and_a_wide_spread_is_scaled_down():
    w = np.array([0.0, 0.0] + [0.005] * 100 + [10.0] * 100)  # a spread of 2000: 64 draws each would not do
    r = solve(w, np.arange(len(w)), 8)
    assert r.counts[:2].tolist() == [0, 0]
    assert r.draws <= MAX_DRAWS_PER_SAMPLE * 200 * 1.01  # capped, so some light samples get no row
    assert 0 < np.count_nonzero(r.counts[2:102]) < 100
    error = max_error(
        share_table(w, r.counts, {"x": np.array(["z"] * 2 + ["light"] * 100 + ["heavy"] * 100, object)})
    )
    assert error["x"] < 0.002


def test_grid_uses_floors_and_ceilings_when_they_fit_else_a_geometric_ladder():
    assert grid(np.array([1.0, 2.5, 4.0]), 8).tolist() == [1, 2, 3, 4]
    ladder = grid(np.array([1.0, 3.3, 7.7, 42.5, 1000.0]), 4).tolist()  # 8 floors and ceilings > 4
    assert ladder == [1, 10, 100, 1000]
    assert grid(np.array([0.3, 2.0]), 8).tolist() == [0, 1, 2]  # 0: a sample below one row


def test_drawing_choice_mix_fallback_and_left_out():
    stored = [("canny", "xdog"), ("canny",), ("xdog",)]
    sets = np.array([0, 1, 2, 0, 1, 2])
    u = np.array([0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    mix = DrawingChoice.parse("canny,xdog", ["canny", "xdog"])
    choice, case = mix.choose(u, stored, sets)
    assert choice.tolist() == [0, 0, 1, 1, 0, 1] and case.tolist() == [
        FIRST,
        FIRST,
        FALLBACK,
        FIRST,
        FALLBACK,
        FIRST,
    ]
    only = DrawingChoice.parse("xdog", ["canny", "xdog"])
    choice, case = only.choose(u, stored, sets)
    assert choice.tolist() == [0, -1, 0, 0, -1, 0] and case[1] == LEFT_OUT
    default = DrawingChoice.parse(None, ["canny", "xdog"])
    assert default.names == ("canny", "xdog") and default.shares == (1.0, 0.0)
    assert DrawingChoice.parse("canny=3,xdog=1", ["canny", "xdog"]).shares == (0.75, 0.25)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("hed", "not in this build"), ("canny,canny", "twice"), ("canny=x", "must be a number"),
     ("canny=0", "at least one share"), ("canny=-1", ">= 0"), (",", "names no extractor")],
)  # fmt: skip
def test_bad_extractor_specs(spec, message):
    with pytest.raises(DrawingError, match=message):
        DrawingChoice.parse(spec, ["canny", "xdog"])


def test_key_uniforms_are_stable_and_uniform():
    keys = [f"danbooru_{i}" for i in range(20000)]
    u = key_uniforms(keys, 0, "drawing")
    assert np.array_equal(u, key_uniforms(keys, 0, "drawing"))
    assert not np.array_equal(u, key_uniforms(keys, 1, "drawing"))
    assert abs(u.mean() - 0.5) < 0.01 and u.min() >= 0 and u.max() < 1
    assert key_uniforms(keys[5:6], 0, "drawing")[0] == u[5]  # per key: the rest of the build does not matter


def test_a_held_out_samples_weight_goes_to_the_rest_of_its_cell():
    w = np.array([1.0, 3.0, 2.0, 2.0, 5.0])
    source = np.array([0, 0, 0, 1, 1])
    kept = np.array([True, False, True, True, False])  # cell 0: lost weight 3; cell 1: lost 5
    carried = carried_weights(w, kept, [source])
    assert carried.tolist() == [2.0, 0.0, 4.0, 7.0, 0.0]  # cell totals 6 and 7 kept


def test_an_emptied_cell_hands_its_weight_to_the_next_coarser_group():
    w = np.array([1.0, 1.0, 2.0, 4.0, 3.0])
    source = np.array([0, 0, 0, 0, 1])
    tier = np.array([0, 0, 1, 1, 0])
    kept = np.array([True, True, False, False, False])  # source 0's tier 1 is all gone; source 1 too
    carried = carried_weights(w, kept, [source, tier])
    assert carried.tolist() == [4.0, 4.0, 0.0, 0.0, 0.0]  # source 0 keeps its 8; source 1 has nobody


def test_the_command_line_offers_every_target():
    from pipelines.commands.export import TARGETS
    from pipelines.export.target import MODULES, get

    assert TARGETS == tuple(MODULES)  # the parser's choices, without importing the export at start-up
    assert all(get(name).name == name for name in MODULES)
