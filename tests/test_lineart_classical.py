"""Classical extractors: the registry contract, the OpenCV path against independent references, and
the torch path against the OpenCV path.

Stated tolerances (OpenCV path vs torch path, same options, uint8 outputs):
- binary operators (canny, adaptive_threshold) and integer ones (dilate_diff): at least 99.9% of
  pixels identical (both paths use the same gray weights, kernels, borders and rounding; only float
  summation order may differ);
- soft operators (xdog, dog, sobel): every pixel within 1 level, at least 99.5% identical.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

import lineart
from lineart.filters import canny_thresholds, gaussian_kernel

from .conftest import gradient_image

CLASSICAL = ["adaptive_threshold", "canny", "dilate_diff", "dog", "sobel", "xdog"]
BINARY = {"canny", "adaptive_threshold", "dilate_diff"}
CORPUS_NAMES = ["style2paints_004.jpg", "anime2sketch_001.jpg", "danbooregion_007.png", "paintsundo_003.jpg"]


def _load(corpus: str, name: str, size=(192, 128)) -> np.ndarray:
    bgr = cv2.imread(os.path.join(corpus, name))
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def real_batch(corpus) -> np.ndarray:
    return np.stack([_load(corpus, n) for n in CORPUS_NAMES] + [gradient_image(192, 128, seed=3)])


def _agree(name: str, a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    equal = float((diff == 0).mean())
    if name in BINARY:
        assert equal >= 0.999, f"{name}: only {equal:.5f} of pixels agree"
    else:
        assert diff.max() <= 1, f"{name}: max diff {diff.max()}"
        assert equal >= 0.995, f"{name}: only {equal:.5f} of pixels agree"


# ---------------------------------------------------------------- registry


def test_available_lists_every_classical_operator():
    assert set(CLASSICAL) <= set(lineart.available())
    assert lineart.available("classical") == CLASSICAL
    assert lineart.available() == sorted(lineart.available())


def test_unknown_name_lists_available():
    with pytest.raises(lineart.UnknownExtractorError) as exc:
        lineart.create("cany")
    for name in CLASSICAL:
        assert name in str(exc.value)


def test_bad_options_are_errors():
    with pytest.raises(TypeError, match="no option"):
        lineart.create("canny", treshold=3)
    with pytest.raises(ValueError, match="must be float"):
        lineart.create("xdog", sigma="wide")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        lineart.create("dog", sigma=0.0)
    with pytest.raises(ValueError, match="odd"):
        lineart.create("adaptive_threshold", block_size=10)
    with pytest.raises(ValueError, match="mode"):
        lineart.create("canny", mode="otsu")
    with pytest.raises(ValueError, match="takes no weights"):
        lineart.create("sobel", weights="x.pth")
    with pytest.raises(ValueError, match="CPU only"):
        lineart.create("canny", device="cuda", backend="opencv")
    assert lineart.create("xdog", sigma=1).options["sigma"] == 1.0  # an int where a float is expected


def test_check_options_merges_defaults_without_building():
    merged = lineart.check_options("canny", {"low": 10})
    assert merged["low"] == 10.0 and merged["high"] == 200.0 and merged["backend"] == "auto"


@pytest.mark.parametrize("name", CLASSICAL)
def test_contract_paper_and_ink(name):
    white = np.full((2, 64, 80, 3), 255, np.uint8)
    out = lineart.create(name)(white)
    assert out.shape == (2, 64, 80) and out.dtype == np.uint8
    assert (out == 255).all(), f"{name} draws on blank paper"
    drawing = white.copy()
    cv2.line(drawing[0], (10, 32), (70, 32), (0, 0, 0), 2)
    cv2.circle(drawing[1], (40, 32), 20, (20, 20, 20), 2)
    out = lineart.create(name)(drawing)
    for i in range(2):
        ink = out[i] < 128
        assert ink.sum() > 30, f"{name} missed the stroke in image {i}"
        ys, xs = np.nonzero(ink)
        assert abs(np.median(ys) - 32) <= 3, f"{name} put ink away from the stroke"


def test_mixed_sizes_are_an_error_and_extract_each_groups():
    ext = lineart.create("canny")
    images = [gradient_image(64, 48, 0), gradient_image(32, 40, 1), gradient_image(64, 48, 2)]
    with pytest.raises(ValueError, match="one size"):
        ext(images)
    with pytest.raises(ValueError, match=r"image\[None\]"):
        ext(images[0])
    out = lineart.extract_each(ext, images, batch_size=1)
    assert [o.shape for o in out] == [(48, 64), (40, 32), (48, 64)]
    for img, drawing in zip(images, out, strict=True):
        np.testing.assert_array_equal(drawing, ext(img[None])[0])


# ---------------------------------------------------------------- OpenCV path vs independent references


def test_canny_thresholds():
    assert canny_thresholds(100.7, 200.2, "fixed", 0.33, 0.0) == (100, 200)
    assert canny_thresholds(200.0, 100.0, "fixed", 0.33, 0.0) == (100, 200)  # swapped, as cv2.Canny does
    assert canny_thresholds(0, 0, "median", 0.5, 100.0) == (50, 150)
    assert canny_thresholds(0, 0, "median", 0.5, 250.0) == (125, 255)
    assert canny_thresholds(0, 0, "gradient", 0.33, 301.0, 0.5, 40.0) == (150, 301)
    assert canny_thresholds(0, 0, "gradient", 0.33, 3.0, 0.4, 40.0) == (16, 40)  # the floor of a flat image


def test_canny_median_mode_adapts_to_a_dark_image(real_batch):
    dark = (real_batch[:1] // 4).astype(np.uint8)  # contrast too low for the fixed 100/200
    fixed = lineart.create("canny", mode="fixed")(dark)
    median = lineart.create("canny", mode="median")(dark)
    assert (median < 128).sum() > 5 * max(1, (fixed < 128).sum())


def test_canny_gradient_mode_follows_the_contrast(real_batch):
    """The default thresholds come from the gradient's 90 % quantile: a dark or pale copy of an image
    gets about the same share of edges as the original, where fixed thresholds lose them."""
    assert lineart.info("canny").defaults["mode"] == "gradient"
    ext, fixed = lineart.create("canny"), lineart.create("canny", mode="fixed")
    rgb = real_batch[:1]
    dark = (rgb // 4).astype(np.uint8)
    pale = (255 - (255 - rgb.astype(np.int16)) // 4).astype(np.uint8)
    full = (ext(rgb) < 128).mean()
    for img in (dark, pale):
        share = (ext(img) < 128).mean()
        assert 0.4 * full < share < 2.5 * full, (share, full)
        assert share > 5 * max(1e-4, (fixed(img) < 128).mean())
    flat = np.full((1, 64, 64, 3), 128, np.uint8)  # no gradient at all: no lines, not noise
    assert (ext(flat) == 255).all()


def test_xdog_quantile_mode_draws_dark_and_pale_images(real_batch):
    """Fixed XDoG fills a dark picture with ink (dropped as drowned); the quantile mode draws it,
    and still draws a pale one. mode='fixed' keeps the old output."""
    from lineart.quality import PairQuality, judge

    q = PairQuality()
    rgb = real_batch[:1]
    dark = (rgb // 3).astype(np.uint8)
    pale = (255 - (255 - rgb.astype(np.int16)) // 4).astype(np.uint8)
    fixed, adaptive = lineart.create("xdog", mode="fixed"), lineart.create("xdog")
    assert judge(fixed(dark)[0], q)[0] == "drowned"
    for img in (dark, pale, rgb):
        problem, reason, stats = judge(adaptive(img)[0], q)
        assert problem == "ok", reason
        assert stats["ink"] > 0.01
    # a bright image keeps epsilon (its 10 % gray level is above 0.7): both modes agree
    bright = np.full((1, 64, 64, 3), 240, np.uint8)
    bright[:, 20:24] = 30
    np.testing.assert_array_equal(fixed(bright), adaptive(bright))


def test_xdog_fixed_mode_is_the_old_operator(real_batch):
    rgb = real_batch[0]
    g = _gray(rgb)
    o = {**lineart.info("xdog").defaults, "mode": "fixed"}
    d = (1 + o["p"]) * _scipy_blur(g, o["sigma"]) - o["p"] * _scipy_blur(g, o["sigma"] * o["k"])
    ref = np.where(d >= o["epsilon"], 1.0, 1.0 + np.tanh(o["phi"] * (d - o["epsilon"])))
    out = lineart.create("xdog", mode="fixed")(rgb[None])[0].astype(np.float64)
    assert np.abs(out - ref * 255).max() <= 2


def _gray(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0


def _scipy_blur(x, sigma):
    return ndimage.gaussian_filter(x, sigma, mode="mirror", radius=max(1, math.ceil(3 * sigma)))


def test_xdog_and_dog_match_a_scipy_reference(real_batch):
    rgb = real_batch[0]
    g = _gray(rgb)
    o = lineart.info("xdog").defaults
    assert o["mode"] == "quantile"
    # the threshold follows the image: epsilon capped at its gray level of rank floor(q (n - 1))
    eps = min(
        o["epsilon"], np.quantile(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), o["quantile"], method="lower") / 255
    )
    d = (1 + o["p"]) * _scipy_blur(g, o["sigma"]) - o["p"] * _scipy_blur(g, o["sigma"] * o["k"])
    ref = np.where(d >= eps, 1.0, 1.0 + np.tanh(o["phi"] * (d - eps)))
    out = lineart.create("xdog")(rgb[None])[0].astype(np.float64)
    # float32 in ours vs float64 in scipy; the steep tanh (phi * (1 + p) = 210 per unit) magnifies it
    assert np.abs(out - ref * 255).max() <= 2
    o = lineart.info("dog").defaults
    ink = np.clip((_scipy_blur(g, o["sigma"] * o["k"]) - _scipy_blur(g, o["sigma"])) * o["gain"], 0, 1)
    out = lineart.create("dog")(rgb[None])[0].astype(np.float64)
    assert np.abs(out - (1 - ink) * 255).max() <= 1


def test_sobel_and_dilate_diff_match_scipy(real_batch):
    rgb = real_batch[1]
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)
    mag = np.hypot(ndimage.sobel(g, axis=1, mode="mirror"), ndimage.sobel(g, axis=0, mode="mirror"))
    out = lineart.create("sobel", blur=0.0, scale=1.0)(rgb[None])[0].astype(np.float64)
    assert np.abs(out - (255 - np.clip(mag / 4, 0, 255))).max() <= 1
    diff = ndimage.grey_dilation(g, size=(5, 5), mode="nearest") - g
    out = lineart.create("dilate_diff", ksize=5, gain=2.0)(rgb[None])[0].astype(np.float64)
    np.testing.assert_array_equal(out, 255 - np.clip(np.rint(diff * 2), 0, 255))


def test_gaussian_kernel():
    k = gaussian_kernel(1.0)
    assert len(k) == 7 and abs(k.sum() - 1) < 1e-12 and k.argmax() == 3


# ---------------------------------------------------------------- torch path vs OpenCV path


@pytest.mark.parametrize("name", CLASSICAL)
def test_torch_path_agrees_with_opencv_on_real_images(name, real_batch):
    cpu = lineart.create(name)
    tch = lineart.create(name, backend="torch")
    assert (cpu.backend, tch.backend) == ("opencv", "torch")
    _agree(name, cpu(real_batch), tch(real_batch))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("canny", {"mode": "median", "sigma": 0.5}),
        ("canny", {"blur": 0.0, "low": 30.0, "high": 90.0, "mode": "fixed"}),
        ("canny", {"edge_share": 0.25, "ratio": 0.3}),
        ("xdog", {"sigma": 1.4, "epsilon": 0.5, "p": 10.0}),
        ("xdog", {"mode": "fixed"}),
        ("xdog", {"quantile": 0.5, "epsilon": 0.9}),
        ("dog", {"sigma": 2.5, "k": 2.0}),
        ("sobel", {"blur": 0.0}),
        ("adaptive_threshold", {"block_size": 5, "c": 2.0}),
        ("adaptive_threshold", {"block_size": 15, "method": "mean"}),
        ("dilate_diff", {"ksize": 5, "gain": 1.5}),
    ],
)
def test_torch_path_agrees_with_options_and_odd_sizes(name, options, real_batch):
    # odd sizes and a tiny image exercise the borders (pads wider than the image included)
    batches = [real_batch[:2, :97, :131], np.stack([gradient_image(7, 5, seed=s) for s in range(2)])]
    for batch in batches:
        batch = np.ascontiguousarray(batch)
        _agree(
            name,
            lineart.create(name, **options)(batch),
            lineart.create(name, backend="torch", **options)(batch),
        )


def test_torch_batch_equals_one_by_one(real_batch):
    ext = lineart.create("canny", backend="torch", mode="median")
    whole = ext(real_batch)
    for i in range(len(real_batch)):
        np.testing.assert_array_equal(whole[i], ext(real_batch[i : i + 1])[0])


@pytest.mark.parametrize("name", CLASSICAL)
def test_cuda_path_agrees_with_opencv(name, real_batch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU path of the classical operators is not exercised")
    gpu = lineart.create(name, device="cuda")
    assert gpu.backend == "torch"
    _agree(name, lineart.create(name)(real_batch), gpu(real_batch))
