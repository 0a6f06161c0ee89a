"""``linepairs extract``: the real CLI, in-process through main() and once as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import lineart
from lineart.registry import EXTRACTORS, register
from pipelines.cli import main

IMAGE = "anime2sketch_001.jpg"


def test_one_extractor_writes_the_drawing(corpus, tmp_path):
    out = tmp_path / "lines.png"
    rc = main(["extract", os.path.join(corpus, IMAGE), "--extractor", "canny", "--option", "mode='median'",
               "--max-side", "256", "-o", str(out)])  # fmt: skip
    assert rc == 0
    drawing = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert drawing.ndim == 2 and max(drawing.shape) == 256
    rgb = cv2.cvtColor(cv2.imread(os.path.join(corpus, IMAGE)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    s = 256 / max(h, w)
    small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(drawing, lineart.create("canny", mode="median")(small[None])[0])


def test_default_output_name(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["extract", os.path.join(corpus, IMAGE), "--extractor", "sobel", "--max-side", "128"]) == 0
    assert (tmp_path / "anime2sketch_001.sobel.png").is_file()


def test_all_writes_a_contact_sheet_and_reports_skips(corpus, tmp_path, capsys, monkeypatch):
    # no weights anywhere and no downloads: every learned network is skipped, with its reason
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("LINEPAIRS_OFFLINE", "1")
    learned = lineart.available(kind="learned")

    # a learned-style extractor whose weights cannot resolve must be skipped with its reason
    def needs_weights(weights=None, device="cpu"):
        raise FileNotFoundError("weights for test_needs_weights not found; put them in ~/.cache")

    register("test_needs_weights", kind="learned", summary="test only")(needs_weights)
    try:
        out = tmp_path / "sheet.png"
        assert (
            main(["extract", os.path.join(corpus, IMAGE), "--all", "--max-side", "128", "-o", str(out)]) == 0
        )
    finally:
        EXTRACTORS.unregister("test_needs_weights")
    captured = capsys.readouterr()
    assert (
        "skipped test_needs_weights: FileNotFoundError: weights for test_needs_weights not found"
        in captured.err
    )
    drawn = lineart.available(kind="classical")
    assert f"{len(drawn)} extractors ({', '.join(drawn)}); skipped {len(learned) + 1}" in captured.out
    for name in learned:
        assert f"skipped {name}:" in captured.err
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    tiles = len(drawn) + 1  # the input, then one per extractor
    cols = min(4, tiles)
    rows = -(-tiles // cols)
    label = 28
    assert sheet.shape == (rows * (128 + label), cols * 128, 3)
    # each tile holds that extractor's drawing (inside the 1-px frame)
    rgb = cv2.resize(cv2.cvtColor(cv2.imread(os.path.join(corpus, IMAGE)), cv2.COLOR_BGR2RGB), (128, 128),
                     interpolation=cv2.INTER_AREA)  # fmt: skip
    for i, name in enumerate(drawn, start=1):
        r, c = divmod(i, cols)
        tile = sheet[r * (128 + label) + 1 : r * (128 + label) + 127, c * 128 + 1 : c * 128 + 127, 0]
        np.testing.assert_array_equal(tile, lineart.create(name)(rgb[None])[0][1:127, 1:127], err_msg=name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--extractor", "cany"], "unknown extractor 'cany'; available: adaptive_threshold, canny"),
        (["--extractor", "canny", "--option", "treshold=3"], "no option"),
        (["--extractor", "canny", "--option", "nokey"], "KEY=VALUE"),
        (["--all", "--option", "low=3"], "go with --extractor"),
    ],
)
def test_user_errors_are_one_line_exit_2(corpus, args, message, capsys):
    assert main(["extract", os.path.join(corpus, IMAGE), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_images_are_usage_errors(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing.png"), "--extractor", "canny"]) == 2
    assert "no such image" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["extract", str(bad), "--extractor", "canny"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_subprocess_list_and_extract(corpus, tmp_path):
    exe = [sys.executable, "-m", "pipelines.cli"]
    listed = subprocess.run([*exe, "extract", "x", "--list"], capture_output=True, text=True, check=True)
    for name in lineart.available():
        assert name in listed.stdout
    out = tmp_path / "x.png"
    subprocess.run([*exe, "extract", os.path.join(corpus, IMAGE), "--extractor", "xdog", "--max-side", "96",
                    "-o", str(out)], check=True, capture_output=True)  # fmt: skip
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (96, 96)
