"""Column schemas of the build's tables: the one place for the file contract's columns."""

from __future__ import annotations

import pyarrow as pa

from curation.metrics import METRIC_COLUMNS
from curation.records import TAG_CATEGORIES

_TAGS = [pa.field(f"tags_{c}", pa.list_(pa.string())) for c in TAG_CATEGORIES]

RECORD_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64()),  # position of the input in the enumeration of all sources
        pa.field("key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_id", pa.string()),
        pa.field("location", pa.string()),
        pa.field("post_id", pa.int64()),
        pa.field("md5", pa.string()),
        pa.field("ext", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("rating", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("fav_count", pa.int64()),
        pa.field("is_deleted", pa.bool_()),
        pa.field("is_banned", pa.bool_()),
        pa.field("is_pending", pa.bool_()),
        pa.field("is_flagged", pa.bool_()),
        pa.field("rating_era", pa.string()),  # "old" (s = safe) / "new" (g/s = general/sensitive) / null
        pa.field("reject_reason", pa.string()),
        pa.field("reject_detail", pa.string()),
        *_TAGS,
    ]
)

SCAN_SCHEMA = RECORD_SCHEMA
for _f in (
    pa.field("status", pa.string()),  # "kept" or "rejected"
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("file_bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    # pixel metrics (curation/metrics.py), on every image that decoded
    *[pa.field(c, pa.float64()) for c in METRIC_COLUMNS],
    pa.field("phash", pa.int64()),  # 64-bit DCT perceptual hash (curation/dedup.py), as signed int
    pa.field("learned_score", pa.float64()),  # [quality] scorer output, null without a scorer
    pa.field("quality_score", pa.float64()),  # curation/quality.py, in [0, 1]
    pa.field("duplicate_of", pa.string()),  # key of the kept sample, on dedup rejects only
):
    SCAN_SCHEMA = SCAN_SCHEMA.append(_f)

REJECT_COLUMNS = [
    "seq",
    "source",
    "source_id",
    "key",
    "location",
    "stage",
    "reason",
    "detail",
    "duplicate_of",
]
REJECT_SCHEMA = pa.schema([SCAN_SCHEMA.field(c) for c in REJECT_COLUMNS])

PLAN_EXTRA = [
    pa.field("bucket_w", pa.int32()),
    pa.field("bucket_h", pa.int32()),
    pa.field("crop_left", pa.int32()),
    pa.field("crop_top", pa.int32()),
    pa.field("crop_right", pa.int32()),
    pa.field("crop_bottom", pa.int32()),
    # No weight, tier or quality quantile here: they change with the policy and the population, so
    # they live in weight versions (sharding/weights.py), never in the plan, manifest or shards.
    pa.field("shard", pa.string()),  # path relative to OUT
    pa.field("shard_pos", pa.int32()),  # position of the sample inside its shard
]
PLAN_COLUMNS = [
    "seq", "key", "source", "source_id", "location", "post_id", "rating", "score", "fav_count",
    "width", "height", "file_bytes", "sha256", *[f"tags_{c}" for c in TAG_CATEGORIES],
    "rating_era", *METRIC_COLUMNS, "phash", "learned_score", "quality_score",
]  # fmt: skip
PLAN_SCHEMA = pa.schema([SCAN_SCHEMA.field(c) for c in PLAN_COLUMNS] + PLAN_EXTRA)

MANIFEST_SCHEMA = pa.schema(
    [f for f in PLAN_SCHEMA if f.name not in ("location", "shard_pos")]
    + [pa.field("tags", pa.list_(pa.string())), pa.field("extractors", pa.list_(pa.string()))]
)
