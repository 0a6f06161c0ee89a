"""``[buckets] preset``: NovelAI-style bucket sets at the areas people train (sharding/buckets.py)."""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError, config_from_dict
from sharding.buckets import PRESETS, BucketRule, make_buckets, preset_for


@pytest.mark.parametrize(("name", "side"), [("sd15", 512), ("sd2", 768), ("sdxl", 1024)])
def test_each_preset_reaches_its_area_in_steps_of_64(name, side):
    buckets = make_buckets(PRESETS[name])
    assert max(w * h for w, h in buckets) == side * side  # the square bucket is the training size
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= side * side for w, h in buckets)
    assert min(min(b) for b in buckets) == side // 2 and max(max(b) for b in buckets) == side * 2


def test_a_preset_in_build_toml_and_keys_beside_it():
    cfg = config_from_dict({"buckets": {"preset": "sdxl", "max_upscale": 1.5}})
    assert cfg.buckets == BucketRule("sdxl", 1024 * 1024, 64, 512, 2048, 1.5)
    assert config_from_dict({}).buckets == BucketRule()  # no preset: NovelAI's 512x768 set, as before
    assert config_from_dict({}).buckets.largest_area == 512 * 768


@pytest.mark.parametrize(
    ("table", "message"),
    [({"preset": "sd3"}, "buckets.preset 'sd3' is unknown; known: sd15, sd2, sdxl"),
     ({"preset": 1024}, "buckets.preset must be str"),
     ({"preset": "sdxl", "min_side": 4096}, "max_side")],
)  # fmt: skip
def test_bad_presets_are_one_clear_error(table, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"buckets": table})


def test_the_preset_that_reaches_a_training_resolution():
    assert [preset_for(s) for s in (256, 512, 640, 768, 1024, 1536)] == [
        "sd15",
        "sd15",
        "sd2",
        "sd2",
        "sdxl",
        None,
    ]
