"""``make demo``: build a small dataset with no data of the user's, verify it, say where it is.

Uses ../shared/corpus/illustrations when present. Otherwise it draws its own: a fresh machine has
no anime art, and the sample images that scikit-image ships are photographs (two of them, the
Hubble deep field and a rocket, look drawn enough to every classical measure that a demo built
from them kept photographs as illustrations). ``draw_illustrations`` renders cel-shaded scenes
(flat banded sky, hills, houses, a character with ink outlines) from a seed: drawn art by
construction, the kind of picture a build is for.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

from curation.sources import parse_source
from sharding.layout import Layout
from sharding.verify import verify_build

from .build.request import BuildRequest
from .build.run import run_build
from .config import BuildConfig
from .paths import corpus_illustrations

INK = (24, 20, 28)  # outline colour (RGB)


def _shade(colour: np.ndarray, k: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(colour * k, 0, 255))


def draw_scene(seed: int, size: tuple[int, int] = (768, 576)) -> np.ndarray:
    """One cel-shaded illustration (RGB uint8): banded sky, sun, hills, houses, a character, ink outlines.

    Every region is a flat fill or a few flat bands with an anti-aliased ink outline, as cel art is
    painted; positions, palette and pose come from ``seed``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    sky = rng.uniform(90, 230, 3)
    horizon = int(h * rng.uniform(0.45, 0.6))
    for band in range(4):  # the sky in four flat bands, lighter towards the horizon
        img[band * horizon // 4 : (band + 1) * horizon // 4] = _shade(sky, 0.75 + 0.1 * band)
    sun = (int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.3) * h))
    cv2.circle(img, sun, h // 12, (250, 228, 150), -1, cv2.LINE_AA)
    cv2.circle(img, sun, h // 12, INK, 2, cv2.LINE_AA)
    ground = rng.uniform(60, 200, 3)
    img[horizon:] = _shade(ground, 1.0)
    for _ in range(3):  # hills: flat fills with a shadow band and an outline
        cx, r = int(rng.uniform(0, w)), int(rng.uniform(0.15, 0.3) * w)
        hill = _shade(ground * rng.uniform(0.6, 0.9, 3), 1.0)
        cv2.ellipse(img, (cx, horizon), (r, r // 2), 0, 180, 360, hill, -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx, horizon), (r, r // 2), 0, 180, 360, INK, 2, cv2.LINE_AA)
    cv2.line(img, (0, horizon), (w, horizon), INK, 2, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):  # houses: wall, roof, two windows
        x, bw, bh = (
            int(rng.uniform(0, w * 0.8)),
            int(rng.uniform(0.08, 0.15) * w),
            int(rng.uniform(0.1, 0.18) * h),
        )
        y = horizon - bh // 3
        wall = rng.uniform(150, 240, 3)
        cv2.rectangle(img, (x, y), (x + bw, y + bh), _shade(wall, 1.0), -1)
        cv2.rectangle(img, (x + bw * 2 // 3, y), (x + bw, y + bh), _shade(wall, 0.8), -1)  # shaded side
        roof = np.array([[x - 6, y], [x + bw // 2, y - bh // 2], [x + bw + 6, y]], np.int32)
        cv2.fillPoly(img, [roof], _shade(rng.uniform(90, 200, 3), 1.0), cv2.LINE_AA)
        cv2.polylines(img, [roof], True, INK, 2, cv2.LINE_AA)
        cv2.rectangle(img, (x, y), (x + bw, y + bh), INK, 2, cv2.LINE_AA)
        for k in range(2):
            wx = x + bw // 6 + k * bw // 3
            cv2.rectangle(img, (wx, y + bh // 4), (wx + bw // 6, y + bh // 2), (255, 240, 170), -1)
            cv2.rectangle(img, (wx, y + bh // 4), (wx + bw // 6, y + bh // 2), INK, 1, cv2.LINE_AA)
    # a character: body, head, hair, eyes with highlights
    cx, base = int(rng.uniform(0.3, 0.7) * w), int(h * rng.uniform(0.85, 0.97))
    head_r = int(h * rng.uniform(0.09, 0.12))
    head = (cx, base - int(head_r * 4.2))
    cloth = rng.uniform(40, 220, 3)
    body = np.array([[cx - head_r, head[1] + head_r], [cx + head_r, head[1] + head_r],
                     [cx + int(head_r * 1.8), base], [cx - int(head_r * 1.8), base]], np.int32)  # fmt: skip
    cv2.fillPoly(img, [body], _shade(cloth, 1.0), cv2.LINE_AA)
    cv2.fillPoly(img, [body[[1, 2, 3]]], _shade(cloth, 0.78), cv2.LINE_AA)  # the shadow side
    cv2.polylines(img, [body], True, INK, 3, cv2.LINE_AA)
    skin = np.array([252, 222, 200]) * rng.uniform(0.9, 1.0)
    cv2.circle(img, head, head_r, _shade(skin, 1.0), -1, cv2.LINE_AA)
    hair = rng.uniform(30, 230, 3)
    cv2.ellipse(img, (head[0], head[1] - head_r // 3), (int(head_r * 1.15), int(head_r * 0.9)), 0, 180, 360,
                _shade(hair, 1.0), -1, cv2.LINE_AA)  # fmt: skip
    cv2.circle(img, head, head_r, INK, 3, cv2.LINE_AA)
    for side in (-1, 1):
        eye = (head[0] + side * head_r // 2, head[1] + head_r // 6)
        cv2.ellipse(
            img,
            eye,
            (head_r // 6, head_r // 4),
            0,
            0,
            360,
            _shade(rng.uniform(40, 200, 3), 1.0),
            -1,
            cv2.LINE_AA,
        )
        cv2.ellipse(img, eye, (head_r // 6, head_r // 4), 0, 0, 360, INK, 2, cv2.LINE_AA)
        glint = (eye[0] - head_r // 16, eye[1] - head_r // 10)
        cv2.circle(img, glint, max(2, head_r // 16), (255, 255, 255), -1, cv2.LINE_AA)
    return img


def draw_illustrations(folder: str, n: int = 8, seed: int = 0) -> str:
    """``n`` drawn scenes as PNG in ``folder`` (landscape and portrait), each with a two-tag caption."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        size = (768, 576) if i % 2 == 0 else (576, 768)
        Image.fromarray(draw_scene(seed + i, size)).save(os.path.join(folder, f"scene_{i:02d}.png"))
        with open(os.path.join(folder, f"scene_{i:02d}.txt"), "w") as fh:
            fh.write("scenery, 1girl")
    return folder


def demo_images(workdir: str) -> str:
    """The shared illustrations when present, else drawn ones (``draw_illustrations``)."""
    return corpus_illustrations() or draw_illustrations(os.path.join(workdir, "demo-images"))


def tiny_demo_build(corpus: str, root: str, n: int = 12) -> str:
    """``n`` corpus illustrations at 32x32 with canny lines into ``root/out``: the W-net's test and bench data.

    Tags carry real information: ``warm``/``cool`` by the image's mean red versus blue, plus
    ``portrait``/``landscape`` by its orientation, so the model has a reason to listen to them.
    Returns ``root/out`` at once when it is already built.
    """
    import cv2

    from curation.filters import FilterConfig
    from lineart.quality import PairQuality
    from sharding.buckets import BucketRule

    from .config import ExtractorSpec, ScanConfig, ShardConfig

    src, out = os.path.join(root, "src"), os.path.join(root, "out")
    if os.path.isfile(Layout(out).build_json):
        return out
    os.makedirs(src, exist_ok=True)
    names = sorted(x for x in os.listdir(corpus) if x.lower().endswith((".jpg", ".png")))[:n]
    for name in names:
        bgr = cv2.imread(os.path.join(corpus, name), cv2.IMREAD_COLOR)
        stem = os.path.splitext(name)[0]
        cv2.imwrite(os.path.join(src, stem + ".png"), bgr)
        warm = float(np.mean(bgr[..., 2])) > float(np.mean(bgr[..., 0]))
        shape = "portrait" if bgr.shape[0] > bgr.shape[1] else "landscape"
        with open(os.path.join(src, stem + ".txt"), "w") as fh:
            fh.write(f"{'warm' if warm else 'cool'}, {shape}")
    cfg = BuildConfig(
        scan=ScanConfig(min_side=64),
        # One 32x32 bucket: every image is centre-cropped to a square.
        buckets=BucketRule(max_area=32 * 32, step=16, min_side=32, max_side=32),
        shards=ShardConfig(samples_per_shard=4),
        extractors=(ExtractorSpec("canny"),),
        pair_quality=PairQuality(enabled=False),  # 32 px canny drawings are speckly by nature
        filters=FilterConfig(min_tags=0),  # two tags per image
    )
    run_build(BuildRequest([parse_source(f"demo={src}")], out, cfg, show_progress=False))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-out")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    images = demo_images(os.path.dirname(out))
    print(f"demo: building pairs from {images}")
    summary = run_build(BuildRequest([parse_source(f"demo={images}")], out, BuildConfig()))
    for line in summary.lines():
        print(line)
    faults = verify_build(out)
    if faults:
        print(f"verify: {len(faults)} fault(s)", *faults, sep="\n  ")
        return 1
    print(f"verify: {out} is sound")
    print(
        f"\nLook at it:\n  .venv/bin/linepairs audit {out} --html {out}/report.html   # then open report.html\n"
        f"  ls {out}/shards/*/\n  tar tvf $(ls {out}/shards/*/*.tar | head -1) | head\n"
        f"  .venv/bin/python -c \"import pyarrow.parquet as pq; print(pq.read_table('{out}/manifest.parquet').to_pandas().head())\""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
