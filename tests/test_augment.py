"""Augmentations and pair quality: pure functions over real drawings (extracted from corpus images)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

import lineart
from lineart import augment as A
from lineart.augment import AugmentPolicy
from lineart.quality import PairQuality, judge, line_stats, verdict

ALL_ON = AugmentPolicy(
    enabled=True, thickness_p=1, dropout_p=1, jitter_p=1, binarize_p=1, paper_p=1, jpeg_p=1
)


@pytest.fixture(scope="module")
def drawing(corpus) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(os.path.join(corpus, "anime2sketch_001.jpg")), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
    return lineart.create("canny", mode="median")(rgb[None])[0]


def _ink(x: np.ndarray) -> int:
    return int((x < 128).sum())


def test_thickness_grows_and_shrinks_ink(drawing):
    thick = A.thickness(drawing, 1)
    assert _ink(thick) > 2 * _ink(drawing)
    assert (thick[drawing < 128] < 128).all()  # every stroke pixel stays ink
    assert _ink(A.thickness(thick, -1)) < _ink(thick)
    assert A.thickness(drawing, 0) is drawing


def test_dropout_erases_about_the_fraction_and_adds_nothing(drawing):
    out = A.dropout(drawing, 0.3, 24, seed=1)
    assert (out >= drawing).all()  # only erases
    kept = _ink(out) / _ink(drawing)
    assert 0.45 < kept < 0.95
    np.testing.assert_array_equal(out, A.dropout(drawing, 0.3, 24, seed=1))
    assert not np.array_equal(out, A.dropout(drawing, 0.3, 24, seed=2))


def test_jitter_moves_strokes_by_at_most_alpha(drawing):
    out = A.jitter(drawing, 1.5, 32, seed=3)
    assert not np.array_equal(out, drawing)
    # every ink pixel of the result lies within alpha (+1 for interpolation) of an original stroke
    dist = cv2.distanceTransform((drawing >= 128).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[out < 100].max() <= 2.5


def test_binarize_paper_jpeg(drawing):
    soft = lineart.create("sobel")(np.stack([cv2.cvtColor(drawing, cv2.COLOR_GRAY2RGB)]))[0]
    assert set(np.unique(A.binarize(soft, 128))) <= {0, 255}
    toned = A.paper(drawing, 220, 0.0, seed=0)
    assert toned.max() == 220 and toned.min() == 0
    noisy = A.paper(drawing, 220, 5.0, seed=0)
    assert 3.0 < float(np.std(noisy[drawing == 255].astype(float))) < 7.0
    j = A.jpeg(drawing, 20)
    assert j.shape == drawing.shape and j.dtype == np.uint8 and not np.array_equal(j, drawing)


def test_draw_is_seeded_json_able_and_replayable(drawing):
    out1, rec1 = A.augment(drawing, ALL_ON, seed=7)
    out2, rec2 = A.augment(drawing, ALL_ON, seed=7)
    assert rec1 == rec2 and list(rec1) == list(A.OPS)
    np.testing.assert_array_equal(out1, out2)
    assert json.loads(json.dumps(rec1)) == rec1
    np.testing.assert_array_equal(A.apply(drawing, json.loads(json.dumps(rec1))), out1)
    _, rec3 = A.augment(drawing, ALL_ON, seed=8)
    assert rec3 != rec1
    for op, params in rec1.items():  # parameters inside the policy's ranges
        if op == "jpeg":
            assert ALL_ON.jpeg_quality[0] <= params["quality"] <= ALL_ON.jpeg_quality[1]
        if op == "thickness":
            assert ALL_ON.thickness_delta[0] <= params["delta"] <= ALL_ON.thickness_delta[1]


def test_probabilities_are_respected():
    policy = AugmentPolicy(enabled=True, thickness_p=0.0, dropout_p=1.0, jitter_p=0.5)
    counts = {op: 0 for op in A.OPS}
    rng = np.random.default_rng(0)
    for _ in range(400):
        for op in A.draw(policy, rng):
            counts[op] += 1
    assert counts["thickness"] == 0 and counts["dropout"] == 400
    assert 160 < counts["jitter"] < 240
    assert 80 < counts["paper"] < 160  # default 0.3


def test_sample_seed_is_stable_and_distinct():
    assert A.sample_seed(0, "src_1", "canny") == A.sample_seed(0, "src_1", "canny")
    assert len({A.sample_seed(s, k, e) for s in (0, 1) for k in ("a", "b") for e in ("canny", "xdog")}) == 8


def test_policy_from_config_table():
    p = AugmentPolicy.from_dict({"enabled": True, "jpeg_quality": [40, 60], "paper_noise": [0, 3]})
    assert p.jpeg_quality == (40, 60) and p.paper_noise == (0.0, 3.0) and p.enabled
    for bad, match in [
        ({"jpeg_quality": [60, 40]}, "low <= high"),
        ({"jpeg_quality": [0, 40]}, "within"),
        ({"jpeg_quality": 50}, r"\[low, high\]"),
        ({"thickness_delta": [0.5, 1]}, "ints"),
        ({"dropout_p": 1.5}, r"\[0, 1\]"),
        ({"enabled": "yes"}, "must be bool"),
        ({"blur_p": 0.5}, "unknown key"),
    ]:
        with pytest.raises(ValueError, match=match):
            AugmentPolicy.from_dict(bad)


def test_apply_rejects_unknown_ops_and_bad_arrays(drawing):
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.apply(drawing, {"swirl": {}})
    with pytest.raises(ValueError, match="H x W uint8"):
        A.apply(drawing.astype(np.float32), {})


# ---------------------------------------------------------------- pair quality


def test_line_stats_counts_components():
    x = np.full((100, 200), 255, np.uint8)
    cv2.line(x, (10, 10), (190, 10), 0, 1)
    cv2.circle(x, (50, 60), 20, 0, 1)
    x[90, 100] = 0  # a speck
    s = line_stats(x)
    assert s["components"] == 3
    assert s["speck_share"] == pytest.approx(1 / 3)
    assert s["ink"] == pytest.approx(float((x < 128).mean()))
    assert 0.5 < s["largest_component_share"] < 1


def test_verdicts(drawing):
    q = PairQuality()
    assert judge(drawing, q)[0] == "ok"
    blank = np.full_like(drawing, 255)
    problem, reason, _ = judge(blank, q)
    assert problem == "empty" and "min_ink" in reason
    problem, reason, _ = judge(A.thickness(drawing, 8), q)
    assert problem == "drowned" and "max_ink" in reason
    rng = np.random.default_rng(0)
    specks = np.where(rng.random((512, 512)) < 0.02, 0, 255).astype(np.uint8)
    problem, reason, _ = judge(specks, q)
    assert problem == "speckled" and "specks" in reason
    assert verdict(line_stats(specks), PairQuality(max_speck_share=1.0))[0] == "ok"


def test_a_frame_is_caught_and_a_dark_border_or_paper_tone_is_not(drawing):
    """MTEED's residue (grey 128, 3 px left, 1 px top) is `framed`; a wide dark band (a letterboxed
    picture's fill) and augmented paper are not."""
    from lineart.quality import frame_sides

    q = PairQuality()
    framed = drawing.copy()
    framed[:, :3] = 128
    framed[:1, :] = 128
    assert frame_sides(framed) == ["left", "top"]
    problem, reason, stats = judge(framed, q)
    assert problem == "framed" and "left, top" in reason and stats["frame_sides"] == ["left", "top"]
    one = drawing.copy()
    one[-1, :] = 0  # a single 1-px line along the bottom
    assert judge(one, q)[0] == "framed"
    band = drawing.copy()
    band[:, -40:] = 0  # a wide dark band: part of the picture, not a frame
    assert frame_sides(band) == [] and judge(band, q)[0] == "ok"
    for augmented in (A.paper(drawing, 215, 6.0, 1), A.jpeg(drawing, 30), A.thickness(drawing, 1)):
        assert frame_sides(augmented) == [] and judge(augmented, q)[0] == "ok"
    assert judge(framed, PairQuality(frame_width=0))[0] == "ok"  # 0 turns the check off


def test_pair_quality_from_config_table():
    assert PairQuality.from_dict({"max_ink": 0.3, "min_ink": 0}).max_ink == 0.3
    with pytest.raises(ValueError, match="min_ink < max_ink"):
        PairQuality.from_dict({"min_ink": 0.5, "max_ink": 0.4})
    with pytest.raises(ValueError, match="unknown key"):
        PairQuality.from_dict({"max_lines": 3})
