"""Regenerate docs/img/lineart_nets_pidinet_mteed.png: corpus illustrations beside the real
PiDiNet and MTEED drawings. Run from the repository root: ``.venv/bin/python docs/img/make_lineart_nets_sheet.py``."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image

import lineart
from pipelines.paths import corpus_illustrations, shared_dir

NAMES = ["style2paints_004.jpg", "anime2sketch_001.jpg", "style2paints_021.png", "paintsundo_003.jpg"]
TILE = 224
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lineart_nets_pidinet_mteed.png")


def centre_crop_512(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    s = 512 / min(h, w)
    img = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    y, x = (h - 512) // 2, (w - 512) // 2
    return cv2.cvtColor(img[y : y + 512, x : x + 512], cv2.COLOR_BGR2RGB)


def main() -> None:
    imgs = np.stack([centre_crop_512(os.path.join(corpus_illustrations(), n)) for n in NAMES])
    weights = os.path.join(shared_dir(), "weights")
    drawings = [
        lineart.create("pidinet", weights=os.path.join(weights, "pidinet", "table5_pidinet.pth"))(imgs),
        lineart.create("mteed", weights=os.path.join(weights, "mteed", "MTEED.pth"))(imgs),
    ]
    rows = []
    for i in range(len(NAMES)):
        cells = [cv2.resize(imgs[i], (TILE, TILE), interpolation=cv2.INTER_AREA)]
        for d in drawings:
            cells.append(
                cv2.cvtColor(cv2.resize(d[i], (TILE, TILE), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2RGB)
            )
        rows.append(np.concatenate(cells, 1))
    sheet = np.concatenate(rows, 0)
    head = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    for j, label in enumerate(
        ["illustration (512 crop)", "pidinet (table5_pidinet.pth)", "mteed (MTEED.pth)"]
    ):
        cv2.putText(
            head, label, (j * TILE + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    sheet = np.concatenate([head, sheet], 0)
    # 128-colour palette PNG keeps the file small (about 250 KB) for the README
    Image.fromarray(sheet).quantize(
        colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    ).save(OUT, optimize=True)
    print(OUT, os.path.getsize(OUT))


if __name__ == "__main__":
    main()
