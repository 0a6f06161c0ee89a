"""A demo build for the W-net tests: a dozen shared-corpus illustrations at 32x32, canny lines, colour tags.

Tags carry real information: ``warm`` or ``cool`` by the image's mean red versus blue, plus
``portrait``/``landscape`` by its orientation, so the model has a reason to listen to them.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from curation.filters import FilterConfig
from curation.sources import parse_source
from lineart.quality import PairQuality
from pipelines.build import BuildRequest, run_build
from pipelines.config import BuildConfig, ExtractorSpec, ScanConfig, ShardConfig
from sharding.buckets import BucketRule

IMAGES = 12


def demo_build(corpus: str, root: str, n: int = IMAGES) -> str:
    """Build ``n`` corpus images into ``root/out`` (needs the ray_cluster fixture); returns out."""
    src = os.path.join(root, "src")
    out = os.path.join(root, "out")
    if os.path.isfile(os.path.join(out, "build.json")):
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


def tiny_toml(path: str, **train) -> str:
    """A TOML config: the tiny preset with fast test settings and ``train`` overrides."""
    values = {
        "batch_size": 8,
        "log_every": 1,
        "checkpoint_every": 4,
        "sample_every": 0,
        "eval_every": 0,
        **train,
    }
    lines = ['preset = "tiny"', 'name = "tiny-test"', "[train]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v!r}" for k, v in values.items()]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def shared_demo_build(corpus: str, tmp_path_factory) -> str:
    """The demo build, made once per test session (a re-run returns at once); do not modify it."""
    root = str(tmp_path_factory.getbasetemp() / "wnet-demo")
    os.makedirs(root, exist_ok=True)
    return demo_build(corpus, root)
