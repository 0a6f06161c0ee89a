"""Hostile numbers in configs: nan, inf and values whose sums overflow are refused when the config
is loaded (one line, exit 2), and no weight policy can make the solver loop for ever."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from curation.weighting import WeightConfig, WeightError, compute_weights, solve_scale
from pipelines.config import BuildConfig, ConfigError, config_from_dict

from .helpers import cli, write_config

HOSTILE = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-308, 2**63 - 1, -(2**63), 0, -1]


def numeric_keys() -> list[tuple[str, str, object]]:
    """(section, key, default) of every number in every config section."""
    found = []
    for section, table in BuildConfig().to_dict().items():
        if isinstance(table, dict):
            for key, default in table.items():
                if isinstance(default, int | float) and not isinstance(default, bool):
                    found.append((section, key, default))
    return found


def _finite_everywhere(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite_everywhere(v) for v in value)
    return True


def test_every_number_of_every_section_is_refused_or_finite():
    """Each hostile value in each numeric key: a ConfigError naming the key, or a config whose every
    number is finite (an accepted value never smuggles a nan or an inf past the load)."""
    keys = numeric_keys()
    assert len(keys) > 60  # every section is in the sweep
    refused = 0
    for section, key, default in keys:
        for value in HOSTILE:
            if isinstance(default, int) and isinstance(value, float):
                value = value if not math.isfinite(value) else int(value) if abs(value) < 1e300 else value
            try:
                cfg = config_from_dict({section: {key: value}})
            except ConfigError as exc:
                refused += 1
                assert "\n" not in str(exc)
                if isinstance(value, float) and not math.isfinite(value):
                    assert f"{section}.{key}" in str(exc) and "not a finite number" in str(exc)
                continue
            assert _finite_everywhere(cfg.to_dict()), (section, key, value)
    assert refused > len(keys) * 3  # nan, inf and -inf at least, everywhere


@pytest.mark.parametrize(
    "text, where",
    [
        ("[weights]\nhigh_weight = 1e308\n", "weights.high_weight"),
        ("[weights]\nlow_weight = 1e308\n", "weights.low_weight"),
        ("[weights]\nhigh_weight = nan\n", "weights.high_weight"),
        ("[weights]\nlow_weight = inf\n", "weights.low_weight"),
        ("[weights]\nmax_weight = 1e300\n", "weights.max_weight"),
        ("[weights]\ntag_balance = true\ntag_power = 1e9\n", "weights.tag_power"),
        ("[buckets]\nmax_side = 1000000000000\n", "buckets.max_side"),
        ("[scan]\nmax_seconds = 1e308\n", "scan.max_seconds"),
        ("[shards]\njpeg_quality = 1000\n", "shards.jpeg_quality"),
        ("[materialize]\ngpu_share = 1e-300\n", "materialize.gpu_share"),
        ("seed = -1\n", "seed"),
    ],
)
def test_hostile_numbers_are_one_line_at_load(tmp_path, text, where):
    """Was: 1e308 hung `build` in the plan and `reweight`; nan/inf wrote an all-NaN version."""
    cfg = write_config(str(tmp_path / "c.toml"), text)
    src = tmp_path / "src"
    src.mkdir()
    start = time.monotonic()
    res = cli("build", str(src), "--out", str(tmp_path / "out"), "--config", cfg, timeout=60)
    assert res.returncode == 2 and where in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and time.monotonic() - start < 60


def test_reweight_refuses_hostile_weights_without_hanging(tmp_path):
    """`linepairs reweight OUT --config w.toml` reads its [weights] through the same check (the OUT
    needs no build: the config is refused first)."""
    for text, where in (("[weights]\nhigh_weight = 1e308\n", "weights.high_weight"),
                        ("[weights]\nlow_weight = nan\n", "weights.low_weight")):  # fmt: skip
        cfg = write_config(str(tmp_path / "w.toml"), text)
        res = cli("reweight", str(tmp_path), "--config", cfg, timeout=60)
        assert res.returncode == 2 and where in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_the_solver_is_bounded_whatever_the_weights():
    """solve_scale over raw weights that overflow, underflow or are not numbers: a WeightError or
    a scale that meets the target, in bounded time (was: a doubling loop from 0 that never ended)."""
    rng = np.random.default_rng(0)
    cases = [
        np.array([1e308, 1e308, 1.0]),
        np.array([np.nan, 1.0]),
        np.array([np.inf, 1.0]),
        np.full(1000, 5e-324),  # subnormal: the sum is tiny, the scale huge
        np.array([1e-300, 1e300]),
        rng.uniform(1e-6, 1e6, 10_000),
    ]
    for u in cases:
        for lo, hi in ((0.0, 0.0), (0.5, 2.0), (0.0, 3.0)):
            start = time.monotonic()
            try:
                c = solve_scale(u, float(len(u)), lo, hi)
            except WeightError:
                pass
            else:
                total = np.clip(c * u, lo, hi if hi > 0 else np.inf).sum()
                assert math.isfinite(c) and abs(total - len(u)) <= 1e-6 * len(u), (u[:3], lo, hi)
            assert time.monotonic() - start < 5


def test_every_accepted_policy_solves_or_refuses_in_bounded_time():
    """The extremes that [weights] accepts, on a population with rare tags and two sources."""
    n = 2000
    rng = np.random.default_rng(1)
    sources = np.where(rng.random(n) < 0.01, "rare", "big").astype(object)
    tags = [[f"t{rng.integers(0, 5000)}"] for _ in range(n)]
    extremes = [
        dict(high_weight=1e6, low_weight=1e-6),
        dict(high_weight=1e-6, low_weight=1e6, high_fraction=1.0),
        dict(tag_balance=True, tag_power=16.0, tag_cap=1e6, tag_threshold=1.0),
        dict(max_weight=1.0, min_weight=1.0),
        dict(shares={"rare": 0.999, "big": 0.001}, max_weight=1e6),
        dict(shares={"rare": 0.999, "big": 0.001}, max_weight=2.0),  # cannot be met: a WeightError
    ]
    for extra in extremes:
        cfg = dataclasses.replace(WeightConfig(), **extra)
        cfg.check()
        start = time.monotonic()
        try:
            w = compute_weights(
                cfg, sources=sources, keys=np.arange(n), quality_scores=rng.random(n), tags=tags
            )
        except WeightError:
            continue
        finally:
            assert time.monotonic() - start < 10
        assert np.all(np.isfinite(w.weight)) and abs(w.weight.mean() - 1) < 1e-6, extra
