"""The output contract's names, where every reader can name them (docs/output.md).

A finished OUT is read by the loader and ``verify`` (``sharding``), by ``linepairs export``, by the
W-net and by a later build that takes it as a source (``curation.sources.linepairs_out``), so the
contract version, OUT's public file names and the members of a sample live here, on the ground
floor. Where they lie inside OUT (and the private ``_state/`` files) is ``sharding.layout``'s job.
"""

from __future__ import annotations

# 2: weights, tiers and quality quantiles moved out of shards/manifest/plan into weight versions
#    (OUT/weights/); shards are grouped by bucket only (docs/output.md, "Changes").
# 3: sample JSON without nulls, tags as strings.
# 4: a `txt` caption member per sample; the HF card names the build.
# 5: a JPEG input is decoded at the DCT scale that covers its crop: pixels within docs/scale.md's tolerance.
CONTRACT_VERSION = 5
TXT_SINCE_CONTRACT = 4  # shards carry a `txt` member (the caption, sharding/captions.py) from contract 4 on

# Public names inside OUT.
BUILD_JSON = "build.json"
MANIFEST = "manifest.parquet"
REJECTS = "rejects.parquet"
SHARDS_JSON = "shards.json"
PLAN = "plan.parquet"
SCAN_DIR = "scan"
SHARDS_DIR = "shards"
WEIGHTS_DIR = "weights"  # weight versions: weights/<name>.parquet (sharding/weights.py)
WEIGHTS_ACTIVE = "active.json"  # weights/active.json: {"name": NAME}, the version readers take by default
REJECTS_HISTORY = "rejects_history.parquet"  # reject rows a --retry superseded
DATASET_CARD = "README.md"  # an HF dataset card: the shards and their exact features (sharding/samplejson.py)

# Members of a sample in a shard: KEY.jpg (or .webp), KEY.json, KEY.txt, KEY.lineart.NAME.png.
IMAGE_EXTS = ("jpg", "webp")
DRAWING_PREFIX = "lineart."


def sample_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a shard member that belongs to a sample: ``KEY.EXT`` at the top level,
    split at the first dot (``KEY.lineart.NAME.png`` -> ``lineart.NAME.png``); None for any other
    name (no dot, or a ``/``: a folder's), which no reader takes as a sample's."""
    key, dot, ext = name.partition(".")
    if not dot or "/" in name:
        return None
    return key, ext


def drawing_member(extractor: str) -> str:
    """The member suffix of extractor ``extractor``'s line drawing: ``lineart.NAME.png``."""
    return f"{DRAWING_PREFIX}{extractor}.png"


__all__ = [
    "BUILD_JSON", "CONTRACT_VERSION", "DATASET_CARD", "DRAWING_PREFIX", "IMAGE_EXTS", "MANIFEST", "PLAN",
    "REJECTS", "REJECTS_HISTORY", "SCAN_DIR", "SHARDS_DIR", "SHARDS_JSON", "TXT_SINCE_CONTRACT",
    "WEIGHTS_ACTIVE", "WEIGHTS_DIR", "drawing_member", "sample_member",
]  # fmt: skip
