"""curation.prepare: an image file decoded by the scan's decoder and shrunk, as `extract` and the
scorecard read it."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from curation.decode import DecodeReject
from curation.prepare import load_rgb, shrink_to


def test_shrink_to_keeps_the_aspect_and_never_enlarges():
    rgb = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    small = shrink_to(rgb, 150)
    assert small.shape == (150, 100, 3) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, cv2.resize(rgb, (100, 150), interpolation=cv2.INTER_AREA))
    assert shrink_to(rgb, 300) is rgb  # already small enough: the same array, no copy
    assert shrink_to(rgb, 1000) is rgb
    assert shrink_to(rgb, 0) is rgb  # 0: keep
    assert shrink_to(np.zeros((1000, 2, 3), np.uint8), 100).shape == (100, 1, 3)  # a side never below 1
    assert shrink_to(np.zeros((7, 10), np.uint8), 4).shape == (3, 4)  # grey too; 2.8 rounds to 3


def test_load_rgb_reads_the_corpus_like_the_scan(corpus):
    path = os.path.join(corpus, "anime2sketch_001.jpg")
    full = load_rgb(path)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    assert full.shape == bgr.shape and full.dtype == np.uint8
    assert np.abs(full.astype(int) - bgr[..., ::-1].astype(int)).mean() < 2  # RGB order, same pixels
    small = load_rgb(path, 256)
    assert max(small.shape[:2]) == 256
    np.testing.assert_array_equal(small, shrink_to(full, 256))


def test_load_rgb_flattens_transparency_onto_white(tmp_path):
    layer = np.zeros((20, 30, 4), np.uint8)  # black everywhere, opaque only on a line
    layer[10, :, 3] = 255
    cv2.imwrite(str(tmp_path / "layer.png"), layer)
    rgb = load_rgb(str(tmp_path / "layer.png"))
    assert (rgb[10] == 0).all() and (np.delete(rgb, 10, axis=0) == 255).all()


def test_load_rgb_refuses_what_is_not_an_image(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rgb(str(tmp_path / "absent.png"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DecodeReject):
        load_rgb(str(tmp_path / "notes.png"))
    with pytest.raises(DecodeReject) as exc:
        load_rgb(str(tmp_path / "notes.png"), max_bytes=4)
    assert exc.value.reason == "too_many_bytes"
