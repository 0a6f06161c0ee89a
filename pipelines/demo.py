"""``make demo``: build a small dataset with no data of the user's, verify it, say where it is.

Uses ../shared/corpus/illustrations when present, else the sample images that scikit-image ships.
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

from .build import BuildRequest, run_build
from .config import BuildConfig
from .paths import corpus_illustrations

SKIMAGE_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def demo_images(workdir: str) -> str:
    corpus = corpus_illustrations()
    if corpus:
        return corpus
    from skimage import data  # ships its sample images inside the wheel: no download

    folder = os.path.join(workdir, "demo-images")
    os.makedirs(folder, exist_ok=True)
    for name in SKIMAGE_SAMPLES:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        Image.fromarray(img[..., :3].astype(np.uint8)).save(os.path.join(folder, f"{name}.png"))
    return folder


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
