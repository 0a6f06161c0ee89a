"""Regenerate docs/img/quality_reasons.jpg: one corpus illustration degraded to show a typical case of
each pixel reject, each tile captioned with the reason the real scan code gives it (not a label typed
here). Run from the repository root: ``.venv/bin/python docs/img/make_quality_reasons.py``."""

from __future__ import annotations

import os

import cv2
import numpy as np

from curation import metrics as m
from curation.decode import decode_image, read_bytes
from pipelines.paths import corpus_illustrations

TILE = 176
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quality_reasons.jpg")


def variants(art: np.ndarray) -> list[tuple[str, np.ndarray]]:
    h, w = art.shape[:2]
    grey = np.repeat(m.gray(art)[..., None], 3, axis=2)
    g = m.gray(art).astype(np.float32)[..., None] / 255.0
    ink = np.array([120, 100, 80], np.float32)  # a weak sepia tint: pencil on paper
    pencil = (ink + (255 - ink) * np.sqrt(g)).astype(np.uint8)
    noisy = np.clip(art + np.random.default_rng(0).normal(0, 60, art.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", art[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 6])
    blocky = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    small = cv2.resize(art, (w // 6, h // 6), interpolation=cv2.INTER_AREA)
    upscaled = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    boxed = cv2.copyMakeBorder(art, h // 3, h // 3, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    page = art.copy()
    for k in range(14):  # a page of lettering over the picture
        y = 30 + k * (h - 40) // 14
        cv2.rectangle(page, (20, y - 22), (w - 20, y + 8), (255, 255, 255), -1)
        cv2.putText(page, "SOME WORDS IN A BALLOON", (26, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
    panels = np.full_like(art, 255)
    for x0, y0, x1, y1 in ((10, 10, w // 2 - 5, h // 2 - 5), (w // 2 + 5, 10, w - 10, h // 2 - 5),
                           (10, h // 2 + 5, w - 10, h - 10)):  # fmt: skip
        panels[y0:y1, x0:x1] = cv2.resize(art, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        cv2.rectangle(panels, (x0, y0), (x1, y1), (0, 0, 0), 4)
    blurred = cv2.GaussianBlur(art, (0, 0), 6)
    flat = np.full_like(art, (222, 184, 135))
    return [("original", art), ("greyscale", grey), ("pencil tint", pencil), ("flat fill", flat),
            ("noise", noisy), ("blur", blurred), ("JPEG q6 (as PNG)", blocky), ("x6 bicubic upscale", upscaled),
            ("letterbox", boxed), ("lettering", page), ("comic panels", panels)]  # fmt: skip


def main() -> None:
    path = os.path.join(corpus_illustrations() or "", "style2paints_005.jpg")
    art = decode_image(read_bytes(path), 10**9).rgb
    tiles = []
    for name, img in variants(art):
        values = {**m.measure(img, None, m.detail_crop(img)), "width": img.shape[1], "height": img.shape[0]}
        failed = m.failed_metric(values, m.MetricThresholds())
        caption = f"{failed[0]}" if failed else "kept"
        s = TILE / max(img.shape[:2])
        thumb = cv2.resize(
            img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA
        )
        tile = np.full((TILE + 40, TILE, 3), 255, np.uint8)
        y, x = (TILE - thumb.shape[0]) // 2, (TILE - thumb.shape[1]) // 2
        tile[y : y + thumb.shape[0], x : x + thumb.shape[1]] = thumb
        cv2.putText(tile, name, (4, TILE + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (80, 80, 80), 1, cv2.LINE_AA)
        cv2.putText(tile, caption, (4, TILE + 34), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 160), 1, cv2.LINE_AA)
        tiles.append(tile)
        print(f"{name:22s} -> {caption}")
    cols = 4
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    cv2.imwrite(OUT, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])


if __name__ == "__main__":
    main()
