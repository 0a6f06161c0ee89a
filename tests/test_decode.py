"""Decoding of awkward inputs: each converts correctly or is rejected with the right reason."""

from __future__ import annotations

import os

import numpy as np
import pytest

from curation.decode import DecodeReject, decode_image, read_bytes
from curation.metrics import MetricThresholds
from curation.scan import ScanSettings, scan_row
from groundwork.limits import MAX_PIXELS

from .badinputs import write_bad_inputs


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bad"))
    return folder, write_bad_inputs(folder)


def test_each_bad_input_gets_its_verdict(bad_folder):
    folder, expected = bad_folder
    for name, reason in expected.items():
        settings = ScanSettings(min_side=64, metrics=MetricThresholds(enabled=False))  # decoding only
        row, _ = scan_row({"location": os.path.join(folder, name)}, settings)
        if reason is None:
            assert row["status"] == "kept", (name, row)
        else:
            assert (row["status"], row["reason"]) == ("rejected", reason), (name, row)
            assert row["detail"], name


def test_bomb_is_refused_before_decoding(bad_folder):
    folder, _ = bad_folder
    with pytest.raises(DecodeReject) as info:
        decode_image(read_bytes(os.path.join(folder, "bomb.png")), max_pixels=MAX_PIXELS)
    assert info.value.reason == "too_many_pixels" and "20000x20000" in info.value.detail


def test_conversions_give_8bit_rgb_with_correct_content(bad_folder):
    folder, _ = bad_folder

    def load(name):
        img = decode_image(read_bytes(os.path.join(folder, name))).rgb
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        return img

    exif = load("exif rotated.jpg")
    assert exif.shape == (400, 300, 3)  # 400x300 rotated by orientation 6
    sixteen = load("sixteen bit.png")
    assert sixteen[0, 0, 0] == 0 and sixteen[-1, -1, 0] == 255  # scaled, not clipped at 255
    assert 100 < sixteen[150, 200, 0] < 160
    rgba = load("rgba.webp")
    # alpha 128 over white: every channel is lifted towards 255
    assert rgba.min() >= 126
    pal = load("palette transparent.png")
    assert pal.shape == (300, 400, 3)
    cmyk = load("cmyk.jpg")
    assert cmyk.shape == (300, 400, 3) and cmyk.std() > 10
