"""lineart.sheet: an image and its labelled drawings in one contact sheet (`extract --all`)."""

from __future__ import annotations

import numpy as np

import lineart
from lineart.sheet import LABEL_HEIGHT, contact_sheet

from .conftest import gradient_image


def test_contact_sheet_places_every_tile_in_a_grid():
    image = gradient_image(48, 32)
    names = ["canny", "sobel", "dog", "xdog", "adaptive_threshold"]
    drawings = [(n, lineart.create(n)(image[None])[0]) for n in names]
    sheet = contact_sheet(image, drawings)
    assert sheet.dtype == np.uint8 and sheet.shape == (2 * (32 + LABEL_HEIGHT), 4 * 48, 3)  # 6 tiles, 4 a row
    inner = (slice(1, 31), slice(1, 47))  # inside the frame
    np.testing.assert_array_equal(sheet[1:31, 1:47], image[inner])
    for i, (_, d) in enumerate(drawings, start=1):
        r, c = divmod(i, 4)
        y, x = r * (32 + LABEL_HEIGHT), c * 48
        tile = sheet[y + 1 : y + 31, x + 1 : x + 47]
        assert (tile == d[inner][..., None]).all()  # grey drawing as RGB
    label = sheet[32 : 32 + LABEL_HEIGHT, 0:48]
    assert (label < 128).any() and (label == 255).mean() > 0.5  # a name in black on white
    empty = sheet[
        32 + LABEL_HEIGHT + 1 : 2 * 32 + LABEL_HEIGHT - 1, 2 * 48 + 1 :
    ]  # the unused tiles stay white
    assert (empty == 255).all()


def test_contact_sheet_columns():
    image = gradient_image(20, 10)
    d = lineart.create("sobel")(image[None])[0]
    assert contact_sheet(image, [], columns=4).shape == (10 + LABEL_HEIGHT, 20, 3)  # the input alone
    assert contact_sheet(image, [("a", d), ("b", d)], columns=1).shape == (3 * (10 + LABEL_HEIGHT), 20, 3)
    assert contact_sheet(image, [("a", d)], columns=0).shape == (2 * (10 + LABEL_HEIGHT), 20, 3)  # 0: one
