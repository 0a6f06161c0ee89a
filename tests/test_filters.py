"""Metadata filters: every reason, rating eras, per-source percentiles, and 'before any decode'."""

from __future__ import annotations

import math

import numpy as np
import pytest

from curation.filters import FilterConfig, Thresholds, check_record, rating_class, resolve_thresholds
from curation.records import REJECT_REASONS
from curation.scan import ScanSettings, scan_row
from pipelines.config import ConfigError, config_from_dict

SIZE = {"min_side": 256, "max_aspect": 4.0}


def post(**kw):
    row = {"source": "d", "post_id": 1, "rating": "g", "rating_era": "new", "ext": "jpg", "score": 10.0,
           "fav_count": 5, "width": 800, "height": 1000, "tags_general": ["1girl", "solo", "smile", "a", "b"],
           "tags_artist": [], "tags_character": [], "tags_copyright": [], "tags_meta": []}  # fmt: skip
    row.update(kw)
    return row


def reason(row, cfg=None, thresholds=None):
    out = check_record(row, cfg or FilterConfig(), thresholds or Thresholds(), **SIZE)
    return out[0] if out else None


def test_rating_eras():
    assert rating_class("s", "old") == "safe"
    assert rating_class("s", "new") == "sensitive"
    assert rating_class("s", None) == "sensitive"  # unknown era: the stricter reading
    assert rating_class("g", None) == "general" and rating_class("e", "old") == "explicit"
    assert rating_class(None, None) == "unrated" and rating_class("x", "new") is None
    safe_only = FilterConfig(ratings=("general", "safe"))
    assert reason(post(rating="s", rating_era="old"), safe_only) is None
    assert reason(post(rating="s", rating_era="new"), safe_only) == "rating"
    assert reason(post(rating="s", rating_era=None), safe_only) == "rating"
    assert reason(post(rating="q")) == "rating"
    assert reason(post(rating="z")) == "bad_rating"
    assert reason(post(rating=None)) is None  # folder images have no rating: "unrated" is kept by default


@pytest.mark.parametrize(
    ("row", "cfg", "expected"),
    [
        (post(is_deleted=True), FilterConfig(), "status"),
        (post(is_banned=True), FilterConfig(), "status"),
        (post(is_pending=True), FilterConfig(), "status"),
        (post(is_flagged=True), FilterConfig(), None),  # flagged posts pass unless asked
        (post(is_flagged=True), FilterConfig(exclude_flagged=True), "status"),
        (post(is_deleted=True), FilterConfig(exclude_deleted=False), None),
        (post(ext="gif"), FilterConfig(), "extension"),
        (post(score=2.0), FilterConfig(min_score=3), "low_score"),
        (post(score=None), FilterConfig(min_score=3), None),
        (post(fav_count=1), FilterConfig(min_fav_count=2), "low_fav_count"),
        (post(tags_general=["1girl", "monochrome", "a", "b", "c"]), FilterConfig(), "banned_tag"),
        (post(tags_meta=["comic"]), FilterConfig(), "banned_tag"),
        (post(tags_general=["1girl", "monochrome", "a", "b", "c"]), FilterConfig(banned_tags=()), None),
        (post(), FilterConfig(required_tags=("solo", "1girl")), None),
        (post(), FilterConfig(required_tags=("solo", "2girls")), "missing_tag"),
        (post(tags_general=["1girl"]), FilterConfig(), "too_few_tags"),
        (post(post_id=None, tags_general=[]), FilterConfig(), None),  # a folder image without a sidecar
        # a folder caption with 2 tags is not a tagging site's tag list: min_tags is for posts...
        (post(post_id=None, tags_general=["1girl", "solo"]), FilterConfig(), None),
        # ...unless the config says every record with tags
        (
            post(post_id=None, tags_general=["1girl", "solo"]),
            FilterConfig(min_tags_for="all"),
            "too_few_tags",
        ),
        (post(width=100, height=1000), FilterConfig(), "too_small"),
        (post(width=300, height=1300), FilterConfig(), "aspect_out_of_range"),
        (post(width=300, height=300), FilterConfig(min_pixels=300 * 301), "too_few_pixels"),
        (
            post(width=None, height=None),
            FilterConfig(min_pixels=10**9),
            None,
        ),  # size unknown: checked after decode
    ],
)
def test_each_filter(row, cfg, expected):
    assert reason(row, cfg) == expected
    if expected:
        assert expected in REJECT_REASONS["metadata"]


def test_tags_with_markup_and_emoji_are_plain_strings():
    row = post(tags_general=["<script>", "a&b", '"q"', "\U0001f600", "x"])
    assert reason(row, FilterConfig(banned_tags=("<script>",))) == "banned_tag"
    assert reason(row, FilterConfig(required_tags=("\U0001f600",))) is None


def test_percentiles_are_per_source():
    sources = ["a"] * 100 + ["b"] * 10 + ["c"]
    scores = np.concatenate([np.arange(100.0), np.arange(10.0) * 100, [np.nan]])
    favs = np.concatenate([np.arange(100.0), np.full(10, np.nan), [3.0]])
    t = resolve_thresholds(
        sources, scores, favs, FilterConfig(min_score_percentile=90, min_fav_percentile=50)
    )
    assert t["a"].min_score == 89 and t["b"].min_score == 800
    assert t["c"].min_score == FilterConfig().min_score  # no scores at all: only the (off) fixed cut
    assert t["a"].min_fav_count == 49 and math.isinf(t["b"].min_fav_count)
    assert reason(post(score=88.0), thresholds=t["a"]) == "low_score"
    assert reason(post(score=89.0, fav_count=49), thresholds=t["a"]) is None
    assert reason(post(score=89.0, fav_count=48), thresholds=t["a"]) == "low_fav_count"
    # a fixed minimum and a percentile: the larger cut wins
    t2 = resolve_thresholds(sources, scores, favs, FilterConfig(min_score=95, min_score_percentile=90))
    assert t2["a"].min_score == 95 and t2["b"].min_score == 800
    assert Thresholds.from_dict(t["c"].to_dict()) == t["c"]


def test_metadata_filters_run_before_any_decode(tmp_path):
    """A banned-tag record pointing at garbage bytes is a metadata reject, not a decode error."""
    garbage = tmp_path / "1.jpg"
    garbage.write_bytes(b"\xff\xd8 not really a jpeg")
    row = {
        **post(tags_general=["sketch", "a", "b", "c", "d"]),
        "location": str(garbage),
        "reject_reason": None,
    }
    out, pixels = scan_row(row, ScanSettings())
    assert (out["stage"], out["reason"]) == ("metadata", "banned_tag") and pixels is None
    assert out["sha256"] is None  # the file was not even read
    row["tags_general"] = ["a", "b", "c", "d", "e"]
    out, _ = scan_row(row, ScanSettings())
    assert (out["stage"], out["reason"]) == ("decode", "decode_error")


def test_filter_config_is_checked():
    cfg = config_from_dict(
        {"filters": {"ratings": ["general", "safe"], "extensions": [".PNG"], "min_score": 3}}
    )
    assert cfg.filters.extensions == ("png",) and cfg.filters.min_score == 3.0
    for bad in ({"ratings": ["nice"]}, {"min_score": "high"}, {"colour": 1}, {"min_score_percentile": 101},
                {"banned_tags": "comic"}, {"min_tags": -1}, {"min_tags_for": "folders"}):  # fmt: skip
        with pytest.raises(ConfigError):
            config_from_dict({"filters": bad})
