"""``line_stats`` and ``frame_sides`` (lineart/quality.py) take OpenCV's shortcuts for the ink count,
the mean and the edge bands, and label components with BBDT; they must give exactly what the plain
NumPy definitions and OpenCV's default labelling give."""

from __future__ import annotations

import cv2
import numpy as np

import lineart
from lineart.quality import frame_sides, line_stats


def reference_stats(lines: np.ndarray, ink_level: int, speck_area: int) -> dict[str, float]:
    ink = (lines < ink_level).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    comps, specks, mpx = len(areas), int((areas <= speck_area).sum()), lines.size / 1e6
    return {
        "ink": int(ink.sum()) / lines.size,
        "darkness": float(1.0 - lines.mean() / 255.0),
        "components": comps,
        "components_per_mpx": comps / mpx,
        "largest_component_share": float(areas.max() / ink.sum()) if comps else 0.0,
        "median_component_area": float(np.median(areas)) if comps else 0.0,
        "speck_share": specks / comps if comps else 0.0,
        "specks_per_mpx": specks / mpx,
    }


def reference_sides(lines: np.ndarray, width: int, contrast: int, share: float) -> list[str]:
    if width <= 0 or min(lines.shape) <= 2 * width:
        return []
    dark = lines.astype(np.int16) < int(np.median(lines)) - contrast
    found = []
    for side, band in (("left", dark[:, : width + 1].T), ("top", dark[: width + 1]),
                       ("right", dark[:, -width - 1 :].T[::-1]), ("bottom", dark[-width - 1 :][::-1])):  # fmt: skip
        marked = band.mean(axis=1) >= share
        run = int(np.argmin(marked)) if not marked.all() else len(marked)
        if 1 <= run <= width:
            found.append(side)
    return found


def drawings(corpus_images: list[str]) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for k in range(120):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        a = [rng.integers(0, 256, (h, w)),
             np.where(rng.random((h, w)) < 0.05, 0, 255),
             np.full((h, w), int(rng.integers(0, 256))),
             rng.random((h, w)) * int(rng.integers(1, 256))][k % 4].astype(np.uint8)  # fmt: skip
        if k % 3 == 0:  # a dark band along two edges: frames
            a[:, : int(rng.integers(0, 6))] = 10
            a[: int(rng.integers(0, 6))] = 30
        out += [a, np.asfortranarray(a), a[::2, ::3]]  # strided and column-major views too
    extractors = [lineart.create("canny"), lineart.create("xdog")]
    for path in corpus_images:
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), (384, 320))
        out += [ext(rgb[None])[0] for ext in extractors]
    return [a for a in out if a.size]


def test_line_stats_and_frame_sides_equal_their_numpy_definitions(corpus):
    import glob
    import os

    images = sorted(glob.glob(os.path.join(corpus, "*.jpg")))[:8]
    assert images
    for lines in drawings(images):
        for ink_level, speck_area in ((128, 4), (1, 1), (255, 9)):
            assert line_stats(lines, ink_level, speck_area) == reference_stats(lines, ink_level, speck_area)
        for width, contrast, share in ((4, 48, 0.9), (2, 10, 0.5), (0, 48, 0.9)):
            assert frame_sides(lines, width, contrast, share) == reference_sides(
                lines, width, contrast, share
            )
