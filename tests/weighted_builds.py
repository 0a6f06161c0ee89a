"""Small two-source builds for the weights, loader and audit tests (made from generated images).

``danbooru``: Danbooru API posts (JSON lines) with scores and character/artist tags, some of
them with ``<``, ``>``, ``&`` and quotes; ``research``: a plain folder without scores. Images
come in three aspect ratios so that the build has several buckets and both tiers.
"""

from __future__ import annotations

import json
import os

import cv2

from curation.dedup import DedupConfig
from curation.filters import FilterConfig
from curation.metrics import MetricThresholds
from curation.sources import parse_source
from curation.weighting import WeightConfig
from lineart.quality import PairQuality
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from pipelines.config import BuildConfig, ScanConfig, ShardConfig
from sharding.buckets import BucketRule

from .conftest import gradient_image

SIZES = [(192, 288), (288, 192), (240, 240)]  # portrait, landscape, square
NASTY_TAGS = ['<script>alert("x")</script>', "a&b", "tom_&_jerry", "x>y", "'quote'"]


def make_sources(root: str, n_danbooru: int = 24, n_research: int = 8) -> tuple[str, str]:
    dan = os.path.join(root, "danbooru")
    res = os.path.join(root, "research")
    if os.path.isdir(dan) and os.path.isdir(res):  # made earlier in this session
        return dan, res
    os.makedirs(dan)
    os.makedirs(res)
    posts = []
    for i in range(n_danbooru):
        w, h = SIZES[i % len(SIZES)]
        cv2.imwrite(os.path.join(dan, f"{i + 1}.jpg"), gradient_image(w, h, seed=i)[:, :, ::-1])
        character = ["hatsune_miku"] if i % 3 else [f"rare_character_{i}"]
        if i % 4 == 0:
            character.append(NASTY_TAGS[i // 4 % len(NASTY_TAGS)])
        posts.append({
            "id": i + 1, "md5": f"{i:032x}", "file_ext": "jpg", "image_width": w, "image_height": h,
            "rating": "g", "score": (i * 7) % 23, "fav_count": i,
            "tag_string_general": "1girl solo", "tag_string_character": " ".join(character),
            "tag_string_artist": f"artist_{i % 5}", "tag_string_copyright": "", "tag_string_meta": "",
        })  # fmt: skip
    with open(os.path.join(dan, "posts.jsonl"), "w") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in posts)
    for i in range(n_research):
        w, h = SIZES[(i + 1) % len(SIZES)]
        cv2.imwrite(os.path.join(res, f"r{i:02d}.png"), gradient_image(w, h, seed=100 + i)[:, :, ::-1])
    return dan, res


def small_config(**weights) -> BuildConfig:
    return BuildConfig(
        scan=ScanConfig(min_side=64),
        buckets=BucketRule(max_area=192 * 288, step=32, min_side=128, max_side=384),
        weights=WeightConfig(**weights),
        shards=ShardConfig(samples_per_shard=4),
        # The generated flat-colour discs drown XDoG (its fills): keep both drawings for every sample.
        pair_quality=PairQuality(enabled=False),
        # Generated images share their background gradient and carry few tags: the curation checks
        # would drop most of them, and these tests are about weights, not curation.
        filters=FilterConfig(min_tags=0),
        metrics=MetricThresholds(enabled=False),
        dedup=DedupConfig(enabled=False),
    )


def build_two_sources(root: str, out: str, **weights) -> str:
    """Build ``danbooru`` + ``research`` into ``out`` (needs the ray_cluster fixture); returns out."""
    dan, res = make_sources(root)
    weights.setdefault("shares", {"danbooru": 0.5, "research": 0.5})
    req = BuildRequest(
        [parse_source(f"danbooru={dan}"), parse_source(f"research={res}")], out, small_config(**weights),
        show_progress=False,
    )  # fmt: skip
    run_build(req)  # returns at once when ``out`` is already complete
    return out


def shared_build(tmp_path_factory) -> str:
    """The default two-source build (shares 0.5 / 0.5), made once per test session; do not modify it."""
    root = str(tmp_path_factory.getbasetemp() / "weighted-build")
    os.makedirs(root, exist_ok=True)
    return build_two_sources(root, os.path.join(root, "out"))


def weighted_manifest(out: str, name: str | None = None) -> list[dict]:
    """Manifest rows joined with a weight version (None: the active one): weight, tier, factors."""
    import pyarrow.parquet as pq

    from sharding.layout import Layout
    from sharding.weights import read_version

    manifest = pq.read_table(os.path.join(out, "manifest.parquet"))
    _, version, _ = read_version(Layout(out), name, keys=manifest["key"])
    return [{**m, **w} for m, w in zip(manifest.to_pylist(), version.to_pylist(), strict=True)]
