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
