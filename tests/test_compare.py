"""Drawings against real line art: the metrics (lineart.compare), the scorecard (pipelines.scorecard) and ``extract --compare``."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

import lineart
from lineart import compare
from lineart.registry import EXTRACTORS, register
from pipelines import scorecard
from pipelines.cli import main


def _lines(h: int = 120, w: int = 160, dx: int = 0, thickness: int = 1) -> np.ndarray:
    x = np.full((h, w), 255, np.uint8)
    cv2.line(x, (10 + dx, 10), (10 + dx, 110), 0, thickness)
    cv2.circle(x, (90 + dx, 60), 30, 0, thickness)
    return x


def test_identical_and_thicker_lines_score_perfectly():
    ref = _lines()
    s = compare.edge_scores(ref, ref)
    assert s["f1"] == 1.0 and s["chamfer"] == 0.0 and s["ink_ratio"] == 1.0
    thick = compare.edge_scores(_lines(thickness=3), ref)  # thinning: the same centre lines
    assert thick["f1"] > 0.97 and thick["chamfer"] < 0.5 and thick["ink_ratio"] > 2


def test_tolerance_and_chamfer_follow_the_offset():
    ref = _lines()
    near = compare.edge_scores(_lines(dx=2), ref)
    far = compare.edge_scores(_lines(dx=6), ref)
    assert near["f1"] == 1.0 and 1.5 < near["chamfer"] <= 2.0
    assert far["f1"] < 0.2 and 4 < far["chamfer"] < 6.5


def test_empty_drawing_and_extra_ink():
    ref = _lines()
    empty = compare.edge_scores(np.full_like(ref, 255), ref)
    assert empty == {**empty, "f1": 0.0, "precision": 0.0, "recall": 0.0, "ink_ratio": 0.0}
    assert empty["chamfer"] == compare.CHAMFER_CAP
    extra = _lines()
    cv2.line(extra, (140, 5), (140, 115), 0, 1)  # a line the artist did not draw: precision drops
    s = compare.edge_scores(extra, ref)
    assert s["recall"] == 1.0 and s["precision"] < 0.9
    with pytest.raises(ValueError, match="differ in size"):
        compare.edge_scores(ref[:10], ref)


def test_reference_lines_inverts_edge_maps_and_keeps_thin_lines_when_shrinking():
    ref = np.full((240, 400), 255, np.uint8)  # 1-px lines, shrunk 2.5x as the LineDistiller pairs are
    cv2.line(ref, (25, 25), (25, 215), 0, 1)
    cv2.circle(ref, (225, 120), 75, 0, 1)
    small = compare.reference_lines(ref, (160, 96))
    assert small.shape == (96, 160) and (small < 128).sum() > 0.8 * (ref < 128).sum() / 2.5
    edge_map = 255 - ref  # white lines on black, as Canny/HED maps are stored
    np.testing.assert_array_equal(compare.reference_lines(edge_map, (400, 240)), ref)


def test_real_pairs_and_drop_sets(shared):
    pairs, skipped = scorecard.real_pairs(shared)
    assert len(pairs) == 9 and [n for n, _ in skipped] == ["keep_lowsat_003"]  # its HED map is a crop
    sets = scorecard.drop_sets(shared)
    assert len(sets["shared_illustrations"]) == 39  # the two photos are left out
    assert not any("photo" in p for p in sets["shared_illustrations"])
    # every keep-labelled image of the (growing) labelled set, and nothing else: they are named keep_*
    calib = os.path.join(shared, "corpus", "calibration")
    assert sets["calibration_keep"] == sorted(
        os.path.join(calib, f) for f in os.listdir(calib) if f.startswith("keep_")
    )
    assert all(os.path.isfile(p) for p in sets["calibration_keep"])


def test_extract_compare_writes_table_json_and_escaped_sheet(shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path / "no-weights"))
    canny = lineart.create("canny")
    register("test_<b>&", kind="classical", summary="test only")(lambda weights=None, device="cpu": canny)
    try:
        out = tmp_path / "cmp"
        rc = main(["extract", "--compare", "--only", "canny,xdog,test_<b>&,lineart", "--limit", "2",
                   "--max-side", "256", "--shared", shared, "-o", str(out)])  # fmt: skip
    finally:
        EXTRACTORS.unregister("test_<b>&")
    assert rc == 0
    table = capsys.readouterr().out
    assert "| canny | classical |" in table and "no weights here (sk_model.pth)" in table
    report = json.loads((out / "compare.json").read_text())
    rows = report["extractors"]
    assert rows["canny"]["drops"]["shared_illustrations"]["images"] == 2
    assert rows["test_<b>&"]["f1"] == rows["canny"]["f1"] > 0.5  # same drawings, same scores
    assert 0 <= rows["xdog"]["drop_rate"] <= 1 and rows["xdog"]["chamfer"] > 0
    assert "f1" not in rows["lineart"] and "no weights" in rows["lineart"]["note"]
    html_text = (out / "index.html").read_text()
    assert "test_&lt;b&gt;&amp;" in html_text and "test_<b>" not in html_text
    pngs = os.listdir(out / "img")
    assert len(pngs) == 9 * (2 + 3) and all(n.endswith(".png") and "<" not in n for n in pngs)
    drawn = cv2.imread(str(out / "img" / "sketchkeras_001.canny.png"), cv2.IMREAD_UNCHANGED)
    assert drawn.ndim == 2 and max(drawn.shape) == 256


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare", "--only", "cany"], "unknown extractor(s) cany"),
        (["--compare", "--limit", "-1"], "--limit must be >= 0"),
        (["--compare", "some.png"], "takes no IMAGE"),
        (
            ["--compare", "--only", "canny,xdog", "--option", "mode='median'"],
            "--option: ",
        ),  # xdog has no mode
        (["--extractor", "canny", "--limit", "3"], "go with --compare"),
        (["--extractor", "canny"], "needs an IMAGE"),
    ],
)
def test_compare_usage_errors_are_one_line(shared, args, message, capsys):
    assert main(["extract", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_compare_options_apply_to_the_compared_extractor(shared, tmp_path, capsys):
    """``--option`` with --compare builds the extractor that way: fixed thresholds score differently."""
    f1 = {}
    for label, extra in (("default", []), ("fixed", ["--option", "mode='fixed'"])):
        out = tmp_path / label
        rc = main(["extract", "--compare", "--only", "canny", "--limit", "1", "--max-side", "256",
                   "--shared", shared, "-o", str(out), *extra])  # fmt: skip
        assert rc == 0
        f1[label] = json.loads((out / "compare.json").read_text())["extractors"]["canny"]["f1"]
    capsys.readouterr()
    assert f1["default"] != f1["fixed"]
