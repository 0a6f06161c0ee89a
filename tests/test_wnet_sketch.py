"""wnet.sketch: a user's sketch as the W-net's input (`linepairs sample`)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from curation.prepare import load_rgb
from wnet.sketch import sketch_input, sketch_size


@pytest.mark.parametrize(
    "size, max_side, multiple, expected",
    [
        ((56, 40), 0, 16, (64, 32)),  # kept at its size, each side rounded to the nearest multiple
        ((56, 40), 64, 8, (56, 40)),  # small enough and already multiples: untouched
        ((512, 768), 64, 4, (44, 64)),  # scaled down like a training bucket
        ((5, 3), 0, 16, (16, 16)),  # never below one multiple
        ((1000, 30), 100, 8, (96, 8)),
    ],
)
def test_sketch_size(size, max_side, multiple, expected):
    assert sketch_size(size, max_side, multiple) == expected
    w, h = sketch_size(size, max_side, multiple)
    assert w % multiple == 0 and h % multiple == 0


def test_sketch_input_is_grey_at_the_model_size(shared):
    path = os.path.join(shared, "corpus", "sketches")
    name = sorted(n for n in os.listdir(path) if n.endswith((".png", ".jpg")))[0]
    rgb = load_rgb(os.path.join(path, name))
    gray = sketch_input(rgb, 64, 8)
    w, h = sketch_size((rgb.shape[1], rgb.shape[0]), 64, 8)
    assert gray.shape == (h, w) and gray.dtype == np.uint8 and max(h, w) <= 64
    expected = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (w, h), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(gray, expected)


def test_sketch_input_at_its_size_is_only_made_grey():
    rgb = np.full((32, 48, 3), 255, np.uint8)
    rgb[8:24, 20] = (0, 0, 0)
    gray = sketch_input(rgb, 0, 16)
    assert gray.shape == (32, 48)
    assert (gray[8:24, 20] == 0).all() and (gray == 255).sum() == 32 * 48 - 16  # dark lines on white, kept
