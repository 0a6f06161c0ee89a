"""Each pixel metric on images built to have and to lack its property, plus the quality score."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import pytest
import torch

from curation import metrics as m
from curation.decode import decode_image, read_bytes
from curation.quality import (
    LearnedScorer,
    QualityConfig,
    percentile_from_quantiles,
    quality_score,
    source_quantiles,
)
from curation.scan import ScanSettings, scan_rows


@pytest.fixture(scope="module")
def art(corpus) -> np.ndarray:
    """A real colour illustration (skin, blue hair, white dress), at work size."""
    return m.work_copy(decode_image(read_bytes(os.path.join(corpus, "style2paints_005.jpg")), 10**9).rgb)


def grey3(rgb):
    return np.repeat(m.gray(rgb)[..., None], 3, axis=2)


def tint(rgb, bgr=(40, 80, 130)):
    """A sepia-like single-tint version: grey levels mapped onto one hue."""
    g = m.gray(rgb).astype(np.float32)[..., None] / 255.0
    ink = np.array(bgr[::-1], np.float32)
    return (ink + (255 - ink) * g).astype(np.uint8)


def test_greyscale(art):
    colour, _ = m.chroma_stats(art)
    grey, _ = m.chroma_stats(grey3(art))
    assert colour > 15 and grey < 1
    t = m.MetricThresholds()
    assert m.failed_metric(m.measure(grey3(art)), t)[0] == "greyscale"
    assert m.failed_metric(m.measure(art), t) is None


def test_monochrome_tint(art):
    _, spread_colour = m.chroma_stats(art)
    pencil = tint(art, (200, 215, 230))  # a weak single tint: pencil or ink on cream paper
    chroma_tint, spread_tint = m.chroma_stats(pencil)
    assert chroma_tint > m.MetricThresholds().min_chroma_p95  # coloured, so not caught as greyscale...
    assert spread_tint < 0.002 < 0.01 < spread_colour  # ...but all one hue
    assert m.failed_metric(m.measure(pencil), m.MetricThresholds())[0] == "monochrome"
    # A strong one-hue palette (a sepia painting) is colour: the labelled set keeps such art
    # (keep_lowsat_005, _007), so one hue alone is not monochrome, only one *weak* hue.
    sepia = m.measure(tint(art))
    assert sepia["hue_spread"] < 0.002 and sepia["saturation"] > m.MetricThresholds().max_tint_saturation
    assert m.failed_metric(sepia, m.MetricThresholds(min_illustration=0)) is None


def test_colorfulness(art):
    hsv = cv2.cvtColor(art, cv2.COLOR_RGB2HSV)
    hsv[..., 1] //= 4
    dull = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    assert m.colorfulness(art) > 2 * m.colorfulness(dull)
    assert m.colorfulness(grey3(art)) == pytest.approx(0, abs=1e-3)
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    assert m.colorfulness(red) > 70  # a saturated flat colour: the mean term alone


def test_sharpness_and_size_normalisation(art):
    sharp = m.sharpness(m.gray(art))
    blurred = m.sharpness(m.gray(cv2.GaussianBlur(art, (0, 0), 3)))
    assert blurred < m.MetricThresholds().min_sharpness < sharp / 10
    # the same picture saved 3x larger measures about the same: metrics use the work copy
    big = cv2.resize(art, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    assert m.measure(big)["sharpness"] == pytest.approx(m.measure(art)["sharpness"], rel=0.35)


@pytest.mark.parametrize("quality", [20, 50, 75, 95])
def test_jpeg_quality_from_tables(art, quality):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(art, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    assert m.jpeg_quality(buf.tobytes()) == pytest.approx(quality, abs=2)


def test_jpeg_quality_missing_for_png(art):
    ok, buf = cv2.imencode(".png", art)
    assert math.isnan(m.jpeg_quality(buf.tobytes()))
    assert math.isnan(m.jpeg_quality(b"\xff\xd8 broken"))


def test_borders_and_letterbox(art):
    assert m.border_fraction(m.gray(art)) < 0.05
    h, w = art.shape[:2]
    boxed = np.zeros((h + 2 * h // 4, w, 3), np.uint8)  # black bars, a quarter of the height each
    boxed[h // 4 : h // 4 + h] = art
    assert m.border_fraction(m.gray(boxed)) == pytest.approx(0.33, abs=0.03)
    # bars must end in a hard edge against the picture on opposite sides (white margins around a
    # light picture are a plain background: tests/test_calibrate.py)
    pillar = cv2.copyMakeBorder(art, 0, 0, w, w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    assert m.failed_metric(m.measure(pillar), m.MetricThresholds())[0] == "letterboxed"
    # a vertical gradient is not a border, although each row is flat
    ramp = np.repeat(np.linspace(0, 255, 300, dtype=np.uint8)[:, None], 300, axis=1)
    assert m.border_fraction(ramp) < 0.05


def test_blank_and_entropy(art):
    flat = np.full((400, 300, 3), (200, 180, 170), np.uint8)
    noisy = np.random.default_rng(0).integers(0, 256, (400, 300, 3), dtype=np.uint8)
    assert m.gray(flat).std() == 0 and m.entropy(m.gray(flat)) == 0
    assert m.entropy(m.gray(noisy)) > 7.5 > m.entropy(m.gray(art)) > 3
    assert (
        m.failed_metric(m.measure(flat), m.MetricThresholds(min_chroma_p95=0, min_hue_spread=0))[0] == "blank"
    )
    two_tone = np.zeros((300, 300, 3), np.uint8)
    two_tone[:, 150:] = (40, 60, 200)
    two_tone[:, :150] = (250, 200, 60)
    assert m.entropy(m.gray(two_tone)) == pytest.approx(1.0)
    assert m.entropy(m.gray(two_tone)[:, :150]) == 0
    # both halves reach the edges: one is taken as the plain background, the content left is flat
    assert m.failed_metric(m.measure(two_tone), m.MetricThresholds())[0] == "blank"


def speech_bubbles(rgb, n):
    img = rgb.copy()
    h, w = img.shape[:2]
    rng = np.random.default_rng(1)
    for _ in range(n):
        cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 5, 4 * h // 5))
        ax, ay = w // 5, h // 10
        cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, (255, 255, 255), -1)
        cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, (0, 0, 0), 1)
        for k in range(3):
            org = (cx - int(ax * 0.75), cy - ay // 2 + (k + 1) * ay // 4 + 2)
            cv2.putText(img, "HELLO THERE!", org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def test_text_density(art, corpus):
    clean = m.text_density(m.gray(art))
    bubbles = m.text_density(m.gray(speech_bubbles(art, 4)))
    assert clean < 0.01 and bubbles > m.MetricThresholds().max_text_density
    page = np.full((900, 640, 3), 255, np.uint8)
    for k in range(22):
        cv2.putText(
            page,
            "The quick brown fox jumps over",
            (20, 40 + 38 * k),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.9,
            (0, 0, 0),
            2,
        )
    assert m.text_density(m.gray(m.work_copy(page))) > 0.2
    # line art is dark strokes on white too, but not in text lines
    sketch = decode_image(
        read_bytes(os.path.join(os.path.dirname(corpus), "sketches", "style2paints_sketch_004.jpg")), 10**9
    )
    assert m.text_density(m.gray(m.work_copy(sketch.rgb))) < 0.01


def aged_page(art, paper=(214, 190, 150)):
    """A colour comic page on yellowed paper (grey 193: below the 200 that white paper's balloons
    clear): two pictures, four paper-coloured balloons of 12 px lettering, 1400 px tall."""
    page = np.empty((1400, 1000, 3), np.uint8)
    page[:] = paper
    for top in (80, 740):
        page[top : top + 580, 60:940] = cv2.resize(art, (880, 580), interpolation=cv2.INTER_AREA)
        cv2.rectangle(page, (60, top), (939, top + 579), (20, 20, 20), 3)
    for cx, cy in ((300, 250), (700, 470), (320, 930), (690, 1150)):
        cv2.ellipse(page, (cx, cy), (190, 95), 0, 0, 360, paper, -1)
        cv2.ellipse(page, (cx, cy), (190, 95), 0, 0, 360, (20, 20, 20), 2)
        for k in range(4):
            cv2.putText(page, "WHERE IS THE MAP?", (cx - 140, cy - 45 + 28 * k), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6, (25, 25, 25), 2, cv2.LINE_AA)  # fmt: skip
    return page


def test_text_density_reads_lettering_on_yellowed_paper(art):
    """An old page's balloons are its paper, grey 193, not white: "light" is judged against the paper."""
    limit = m.MetricThresholds().max_text_density
    page = aged_page(art)
    grey = m.lettering_copy(page)
    assert grey.shape[0] == m.LETTERING_SIDE and m.paper_white(grey) == pytest.approx(193, abs=3)
    assert m.text_density(grey) > limit
    white = aged_page(art, paper=(255, 255, 255))
    assert m.text_density(m.lettering_copy(white)) > limit
    # an illustration on the same paper is not lettering, nor is a picture's dark ground paper
    cream = (art.astype(np.float32) * np.array([214, 190, 150]) / 255).astype(np.uint8)
    assert m.text_density(m.lettering_copy(cream)) < 0.01
    night = np.full((600, 800), 40, np.uint8)
    assert m.paper_white(night) == 255.0


def test_measure_is_fast_and_complete(art):
    values = m.measure(art)
    assert set(values) == set(m.METRIC_COLUMNS)


def test_quality_components_and_quantiles():
    q = source_quantiles(["a"] * 5 + ["b"], np.array([1, 2, 3, 4, 5, np.nan], float))
    assert (
        q["b"] == []
        and percentile_from_quantiles(5, q["a"]) == 1.0
        and percentile_from_quantiles(1, q["a"]) == 0.0
    )
    assert percentile_from_quantiles(3, q["a"]) == pytest.approx(0.5, abs=0.01)
    base = {
        "sharpness": 5000.0,
        "colorfulness": 40.0,
        "jpeg_quality": 90.0,
        "border_fraction": 0.0,
        "text_density": 0.0,
    }
    cfg = QualityConfig()
    qt = {"score": q["a"], "fav_count": []}
    top = quality_score({**base, "score": 5.0}, qt, cfg)
    low = quality_score({**base, "score": 1.0}, qt, cfg)
    none = quality_score(base, qt, cfg)  # a folder image: pixel components only
    assert low < none < top and 0 <= low and top <= 1
    assert quality_score({**base, "text_density": 0.02, "border_fraction": 0.3}, qt, cfg) < none
    assert math.isnan(quality_score({}, {}, cfg))


class BrightnessScorer(torch.nn.Module):
    """A stand-in aesthetic model with a known answer: mean of the normalised input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_learned_scorer_torchscript_batched(tmp_path, art, small_corpus):
    path = tmp_path / "scorer.pt"
    torch.jit.script(BrightnessScorer()).save(str(path))
    cfg = QualityConfig(scorer=str(path), scorer_size=64, scorer_batch=3, scorer_mean=(0, 0, 0), scorer_std=(1, 1, 1),
                        scorer_logits=False)  # fmt: skip
    scorer = LearnedScorer(cfg)
    dark, light = (art * 0.3).astype(np.uint8), np.full_like(art, 250)
    out = scorer([dark, light, art, art, dark])  # two batches
    assert out.shape == (5,) and out[1] > out[2] > out[0] and out[0] == out[4]
    assert out[1] == pytest.approx(250 / 255, abs=1e-3)
    # in the scan: every kept row gets a learned score and it moves its quality score
    files = sorted(os.listdir(small_corpus))[:3]
    records = [
        {"source": "f", "source_id": f, "location": os.path.join(small_corpus, f), "ext": "jpg"}
        for f in files
    ]
    rows = scan_rows(records, ScanSettings(quality=cfg), scorer)
    for row in rows:
        assert (row["learned_score"] is not None) == (row["status"] == "kept")
    with pytest.raises(ValueError, match="TorchScript"):
        LearnedScorer(QualityConfig(scorer=str(tmp_path / "missing.pt")))


def test_edge_sharpness_tells_inked_edges_from_lens_spread_ones(art):
    """A drawn edge crosses its contrast within a pixel; the same picture through a lens blur does not;
    an illustration upscaled 2x is judged at its own detail scale, so it is not taken for a photo."""
    inked = m.edge_sharpness(m.detail_field(art))
    blurred = m.edge_sharpness(m.detail_field(cv2.GaussianBlur(art, (0, 0), 1.2)))
    assert inked > 0.62 and blurred < 0.55  # 0.65 against 0.53 with the 7x7 contrast window
    h, w = art.shape[:2]
    half = cv2.resize(art, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    up = cv2.resize(half, (w, h), interpolation=cv2.INTER_CUBIC)
    assert (
        m.edge_sharpness(m.detail_field(up, 2.0)) > m.edge_sharpness(m.detail_field(up)) + 0.02
    )  # 0.58 against 0.56
    # flat fill: too few edges to judge, neutral
    assert m.edge_sharpness(m.detail_field(np.full((64, 64, 3), 200, np.uint8))) == 0.5


def test_edge_coherence_tells_drawn_curves_from_broken_texture(art, corpus):
    """A drawn line keeps its direction over the 7x7 window; photographic clutter turns every way."""
    canvas = np.full((512, 512, 3), 255, np.uint8)
    for r in range(40, 240, 40):  # smooth inked curves, as a line drawing has
        cv2.ellipse(canvas, (256, 256), (r, r // 2 + 20), 15, 0, 300, (20, 20, 20), 3, cv2.LINE_AA)
    rng = np.random.default_rng(0)
    # detail a few pixels across, turning every way, as foliage or gravel (0.42; blobs 8 px across
    # already have smooth outlines and read 0.9: the measure is about the 7x7 window's scale)
    clutter = cv2.resize(
        rng.integers(0, 256, (256, 256), np.uint8), (512, 512), interpolation=cv2.INTER_CUBIC
    )
    clutter = np.repeat(clutter[..., None], 3, axis=2)
    drawn, broken = (
        m.edge_coherence(m.edge_field(m.gray(canvas))),
        m.edge_coherence(m.edge_field(m.gray(clutter))),
    )
    assert drawn > 0.9 and broken < 0.6, (drawn, broken)
    illustration = m.edge_coherence(m.edge_field(m.gray(art), m.content_mask(art)))
    photo = m.work_copy(
        decode_image(read_bytes(os.path.join(corpus, "controlnet11_photo_002.png")), 10**9).rgb
    )
    assert (
        illustration > 0.85 > 0.6 > m.edge_coherence(m.edge_field(m.gray(photo), m.content_mask(photo)))
    )  # 0.91 and 0.55
    assert m.edge_coherence(m.edge_field(np.full((64, 64), 200, np.uint8))) == 0.5  # no edges: neutral
    assert "edge_coherence" in m.measure(art)


def test_edge_upscale_reads_soft_native_frames_as_native_and_upscales_as_upscaled(shared):
    """The `upscaled` rule reads the lines' detail: an anime frame at 854x480 (downscaled from its 1080p
    original, so native) holds its lines' detail; the same frame upscaled from 427x240 does not; a
    nearest-neighbour upscale is read from its mosaic."""
    frame_path = os.path.join(shared, "corpus", "calibration", "keep_scene_004.jpg")
    if not os.path.exists(frame_path):
        pytest.skip("../shared/corpus/calibration is absent")
    frame = cv2.resize(
        decode_image(read_bytes(frame_path), 10**9).rgb, (854, 480), interpolation=cv2.INTER_AREA
    )
    small = cv2.resize(frame, (427, 240), interpolation=cv2.INTER_AREA)
    bicubic = cv2.resize(small, (854, 480), interpolation=cv2.INTER_CUBIC)
    nearest = cv2.resize(small, (854, 480), interpolation=cv2.INTER_NEAREST)
    native = m.edge_upscale(m.detail_crop(frame))
    assert native < 1.3 < m.upscale_factor(m.detail_crop(frame))  # the whole spectrum reads it as soft
    assert m.edge_upscale(m.detail_crop(bicubic)) > 1.6
    assert m.mosaic_period(m.detail_crop(nearest)) == 2 and m.mosaic_period(m.detail_crop(frame)) == 1
    assert m.edge_upscale(m.detail_crop(nearest)) >= 2.0
    t = m.MetricThresholds()
    values = {"width": 854, "height": 480, "upscale": 2.45, "edge_upscale": native}
    assert m.effective_side(values) > t.min_effective_side * 256  # the 854x480 frame is kept
    assert m.effective_side({**values, "edge_upscale": 2.45}) < t.min_effective_side * 256
    assert m.edge_upscale(np.full((128, 128), 90, np.uint8)) == 8.0  # no edge anywhere: no detail


def test_a_dim_crisp_scene_is_not_blurry_but_a_blurred_one_is(shared):
    """keep_lowsat_019, a night bedroom: little Laplacian energy (low contrast), crisp edges."""
    path = os.path.join(shared, "corpus", "calibration", "keep_lowsat_019.jpg")
    if not os.path.exists(path):
        pytest.skip("../shared/corpus/calibration is absent")
    t = replace_thresholds(m.MetricThresholds())
    rgb = decode_image(read_bytes(path), 10**9).rgb
    values = m.measure(m.work_copy(rgb), None, m.detail_crop(rgb))
    assert values["sharpness"] < t.min_sharpness and values["edge_upscale"] <= t.crisp_edge_upscale
    assert (m.failed_metric(values, t) or ("",))[0] != "blurry"
    soft = cv2.GaussianBlur(rgb, (0, 0), 2.5)
    blurred = m.measure(m.work_copy(soft), None, m.detail_crop(soft))
    assert blurred["edge_upscale"] > t.crisp_edge_upscale and m.failed_metric(blurred, t)[0] == "blurry"


def replace_thresholds(t: m.MetricThresholds) -> m.MetricThresholds:
    """The rules without the illustration model (these tests are about the other rules)."""
    from dataclasses import replace

    return replace(t, min_illustration=0.0)


def title_banner(art: np.ndarray, ground=(255, 255, 255), ink=(20, 20, 20)) -> np.ndarray:
    """Key art on the left, a big three-word title on a flat ground filling the right half."""
    h, w = art.shape[:2]
    banner = np.zeros((h, 2 * w, 3), np.uint8)
    banner[:, :w] = art
    banner[:, w:] = ground
    for k, word in enumerate(("MAGICAL", "GIRL", "STORY")):
        cv2.putText(
            banner,
            word,
            (w + 20, h // 4 + k * h // 4),
            cv2.FONT_HERSHEY_DUPLEX,
            w / 150,
            ink,
            max(2, w // 60),
        )
    return banner


def test_text_area_finds_large_lettering_not_characters_on_white(art):
    t = m.MetricThresholds()
    assert m.text_area(art) < 0.01
    assert m.text_area(title_banner(art)) > t.max_text_area
    assert m.text_area(title_banner(art, ground=(250, 130, 180), ink=(120, 20, 60))) > t.max_text_area
    assert (
        m.text_area(title_banner(art, ground=(30, 30, 60), ink=(250, 250, 250))) > t.max_text_area
    )  # light on dark
    h, w = art.shape[:2]  # three characters side by side on white: shapes, not a line of glyphs
    trio = np.full((h, 3 * w, 3), 255, np.uint8)
    yy, xx = np.ogrid[:h, :w]
    figure = ((yy - h / 2) / (h / 2.2)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1
    for k in range(3):
        trio[:, k * w : (k + 1) * w][figure] = art[figure]
    assert m.text_area(trio) < t.max_text_area


def test_panels_are_a_gutter_grid_and_architecture_is_not(art, shared):
    h, w = art.shape[:2]
    page = np.full((2 * h + 30, 2 * w + 30, 3), 255, np.uint8)  # four framed panels, white gutters
    tiles = [art, art[::-1], art[:, ::-1], art[::-1, ::-1]]
    for k, tile in enumerate(tiles):
        y, x = 10 + (k // 2) * (h + 10), 10 + (k % 2) * (w + 10)
        page[y : y + h, x : x + w] = tile
        cv2.rectangle(page, (x, y), (x + w - 1, y + h - 1), (0, 0, 0), 2)
    small = m.work_copy(page)
    assert m.panel_count(m.gray(small)) == 4
    assert m.panel_count(m.gray(art)) <= 1
    corridor = os.path.join(shared, "corpus", "calibration", "keep_scene_020.jpg")
    if os.path.exists(corridor):  # a school corridor: straight lines everywhere, no panel grid
        rgb = m.work_copy(decode_image(read_bytes(corridor), 10**9).rgb)
        assert m.straight_lines(m.gray(rgb)) > 0.12 and m.panel_count(m.gray(rgb)) <= 1


def test_balloons_hold_lettering_on_white(art):
    assert m.balloon_count(art) == 0
    assert m.balloon_count(speech_bubbles(art, 3)) >= 2
    shirt = art.copy()  # a white oval with coloured buttons: not lettering
    h, w = art.shape[:2]
    cv2.ellipse(shirt, (w // 2, h // 2), (w // 6, h // 8), 0, 0, 360, (255, 255, 255), -1)
    for k in range(6):
        cv2.rectangle(shirt, (w // 2 - 20 + (k % 2) * 34, h // 2 - 25 + (k // 2) * 20),
                      (w // 2 - 16 + (k % 2) * 34, h // 2 - 15 + (k // 2) * 20), (140, 60, 200), -1)  # fmt: skip
    assert m.balloon_count(shirt) == 0
