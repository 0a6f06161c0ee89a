"""Materialize's decode (curation.decode.decode_for_crop, sharding.materialize.bucket_image): at full
scale the same pixels as Pillow's; at a DCT scale, the bucket image and every classical drawing
within the tolerance written in docs/scale.md, on the shared corpus."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import lineart
from curation.decode import DecodeReject, dct_scale, decode_for_crop, decode_image, scaled_box
from lineart.registry import available
from sharding.buckets import BucketRule, crop_box, make_buckets, nearest_bucket
from sharding.materialize import bucket_image, resize_to_bucket

MAX_PIXELS = 64_000_000
# docs/scale.md, "Materialize decodes at the DCT scale": per-pixel |reduced - full| in 8-bit levels.
# The classical drawings are thresholded: a line one pixel over is 255 at two pixels, so only their
# mean is bounded.
BUCKET_MEAN, BUCKET_MAX = 1.5, 64
DRAWING_MEAN = 6.0
# The default buckets, and small ones that make the corpus images reduce by 4 too.
RULES = (BucketRule(), BucketRule(max_area=256 * 256, min_side=128, max_side=512, step=32))


def _jpegs(corpus: str) -> list[str]:
    return [os.path.join(corpus, n) for n in sorted(os.listdir(corpus)) if n.endswith(".jpg")]


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_full_scale_gives_pillows_pixels(corpus):
    """Where no DCT scale covers the crop, the OpenCV decode is Pillow's, bit for bit (PNG: Pillow)."""
    names = sorted(os.listdir(corpus))
    assert any(n.endswith(".png") for n in names) and len(_jpegs(corpus)) >= 20
    for name in names:
        data = _read(os.path.join(corpus, name))
        full = decode_image(data, MAX_PIXELS).rgb
        h, w = full.shape[:2]
        got = decode_for_crop(data, MAX_PIXELS, (0, 0, w, h), (w, h))
        assert got.scale == 1 and got.size == (w, h), name
        assert got.rgb.dtype == np.uint8 and got.rgb.flags.c_contiguous, name
        assert np.array_equal(got.rgb, full), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_pillows(corpus, orientation):
    pixels = decode_image(_read(os.path.join(corpus, "style2paints_003.jpg")), MAX_PIXELS).rgb
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(buf, "JPEG", quality=92, exif=exif.tobytes())
    data = buf.getvalue()
    full = decode_image(data, MAX_PIXELS).rgb
    h, w = full.shape[:2]
    same = decode_for_crop(data, MAX_PIXELS, (0, 0, w, h), (w, h))
    assert same.size == (w, h) and np.array_equal(same.rgb, full)
    half = decode_for_crop(data, MAX_PIXELS, (0, 0, w, h), (w // 2, h // 2))
    assert half.scale == 2 and half.size == (w, h) and half.rgb.shape == (h // 2, w // 2, 3)
    # the picture is the same way up: the half-scale decode is close to the full one shrunk
    shrunk = cv2.resize(full, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - half.rgb).mean() < BUCKET_MEAN


def test_reduced_decode_stays_within_tolerance(corpus):
    extractors = {name: lineart.create(name) for name in available("classical")}
    reduced = {2: 0, 4: 0}
    worst: dict[str, float] = {}
    for rule in RULES:
        buckets = make_buckets(rule)
        for path in _jpegs(corpus):
            data = _read(path)
            full = decode_image(data, MAX_PIXELS).rgb
            h, w = full.shape[:2]
            bucket = nearest_bucket(w, h, buckets)
            box = crop_box(w, h, bucket)
            scale = dct_scale((w, h), box, bucket)
            if scale == 1:
                continue
            reduced[scale] += 1
            want = resize_to_bucket(full, box, bucket)
            got = bucket_image(data, MAX_PIXELS, (w, h), box, bucket)
            assert got.shape == want.shape
            diff = np.abs(want.astype(np.int16) - got)
            assert diff.mean() <= BUCKET_MEAN and diff.max() <= BUCKET_MAX, (
                path,
                bucket,
                diff.mean(),
                diff.max(),
            )
            worst["bucket"] = max(worst.get("bucket", 0.0), float(diff.mean()))
            for name, fn in extractors.items():
                lines = np.abs(fn(want[None])[0].astype(np.int16) - fn(got[None])[0])
                assert lines.mean() <= DRAWING_MEAN, (path, bucket, name, lines.mean())
                worst[name] = max(worst.get(name, 0.0), float(lines.mean()))
    assert reduced[2] >= 8 and reduced[4] >= 2, reduced  # the tolerance was exercised at both scales
    assert worst["bucket"] > 0  # a reduced decode is not the full one: the bounds are not vacuous


def test_scale_only_where_the_crop_is_covered_and_on_the_grid():
    assert dct_scale((1600, 1280), (0, 58, 1600, 1222), (704, 512)) == 2
    assert dct_scale((1600, 1280), (0, 58, 1600, 1222), (768, 640)) == 1  # 1164 / 2 < 640
    assert dct_scale((1600, 1280), (0, 57, 1600, 1221), (704, 512)) == 1  # top off the 2-grid
    assert dct_scale((1601, 1280), (0, 0, 1601, 1280), (400, 320)) == 4  # right edge = image edge
    assert dct_scale((4096, 4096), (0, 0, 4096, 4096), (256, 256)) == 8
    assert scaled_box((0, 58, 1601, 1222), 2) == (0, 29, 801, 611)


def _encode(pixels: np.ndarray, fmt: str, mode: str = "RGB", **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, fmt, **params)
    return buf.getvalue()


def test_other_inputs_take_pillows_path(corpus):
    rgb = decode_image(_read(os.path.join(corpus, "style2paints_003.jpg")), MAX_PIXELS).rgb
    h, w = rgb.shape[:2]
    box, half = (0, 0, w, h), (w // 2, h // 2)
    for data in (
        _encode(rgb, "WEBP", quality=90),  # Pillow cannot decode WebP scaled
        _encode(rgb, "JPEG", "CMYK"),
        _encode(rgb, "JPEG")[:-2] + b"trailer",  # not ending in EOI: Pillow's verdict
    ):
        got = decode_for_crop(data, MAX_PIXELS, box, half)
        assert got.scale == 1 and np.array_equal(got.rgb, decode_image(data, MAX_PIXELS).rgb)
    truncated = _encode(rgb, "JPEG")[:20_000]
    for bad, reason in ((truncated, "decode_error"), (b"", "empty_file")):
        with pytest.raises(DecodeReject) as info:
            decode_for_crop(bad, MAX_PIXELS, box, half)
        assert info.value.reason == reason
    with pytest.raises(DecodeReject) as info:
        decode_for_crop(_encode(rgb, "JPEG"), 1000, box, half)
    assert info.value.reason == "too_many_pixels"


def test_bucket_image_refuses_a_size_the_scan_did_not_see(corpus):
    data = _read(os.path.join(corpus, "style2paints_003.jpg"))
    with pytest.raises(DecodeReject) as info:
        bucket_image(data, MAX_PIXELS, (1600, 1281), (0, 58, 1600, 1222), (704, 512))
    assert info.value.reason == "materialize_error"
