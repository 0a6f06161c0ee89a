"""Column schemas of the build's tables: the one place for the file contract's columns."""

from __future__ import annotations

import dataclasses
import types
import typing

import pyarrow as pa

from curation.metrics import METRIC_COLUMNS
from curation.records import TAG_CATEGORIES, Record

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _record_fields() -> list[pa.Field]:
    """One column per ``Record`` field, typed from its annotation (the tags dict -> one list per
    category): a field added to Record is a column here, never silently dropped by pyarrow."""
    hints = typing.get_type_hints(Record)
    fields = []
    for f in dataclasses.fields(Record):
        if f.name == "tags":
            continue
        hint = hints[f.name]
        args = (
            [a for a in typing.get_args(hint) if a is not type(None)]
            if isinstance(hint, types.UnionType)
            else [hint]
        )
        if len(args) != 1 or args[0] not in _ARROW:
            raise TypeError(f"Record.{f.name}: no parquet type for {hint!r}")
        fields.append(pa.field(f.name, _ARROW[args[0]]))
    return fields + [pa.field(f"tags_{c}", pa.list_(pa.string())) for c in TAG_CATEGORIES]


# Columns the learned scorers fill (curation/scorers); null when that scorer is not configured.
SCORER_FIELDS = [
    pa.field("aesthetic", pa.float32()),  # LAION improved aesthetic predictor, ~1..10
    pa.field("pred_tags", pa.list_(pa.string())),  # wd_tagger general tags >= threshold, most likely first
    pa.field("pred_tag_probs", pa.list_(pa.float32())),  # their probabilities, same order
    pa.field("pred_rating", pa.string()),  # wd_tagger rating g/s/q/e
    # the deepghs ONNX classifiers (curation/scorers/deepghs.py)
    pa.field("p_real", pa.float32()),  # anime_real: P(photograph)
    pa.field(
        "anime_class", pa.string()
    ),  # anime_classify: most probable of 3d/bangumi/comic/illustration/not_painting
    pa.field("p_3d", pa.float32()),
    pa.field("p_comic", pa.float32()),
    pa.field("p_not_painting", pa.float32()),
    pa.field("p_monochrome", pa.float32()),  # monochrome
    pa.field(
        "dbaesthetic_score", pa.float32()
    ),  # dbaesthetic: expected tier index, 0 (worst) .. 6 (masterpiece)
    pa.field(
        "dbaesthetic_percentile", pa.float32()
    ),  # its percentile on Danbooru (the model's samples table)
    pa.field("dbaesthetic_tier", pa.string()),  # worst / low / normal / good / great / best / masterpiece
    pa.field("dbrating", pa.string()),  # dbrating: g/s/q/e
    pa.field("dbrating_p", pa.float32()),  # its probability
]

RECORD_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64()),  # position of the input in the enumeration of all sources
        pa.field("key", pa.string()),
        *_record_fields(),
    ]
)

# The scan moves a source's reject_reason/detail into reason/detail: the scan table does not repeat them.
SCAN_SCHEMA = pa.schema([f for f in RECORD_SCHEMA if f.name not in ("reject_reason", "reject_detail")])
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
    *SCORER_FIELDS,
    pa.field("quality_score", pa.float64()),  # curation/quality.py, in [0, 1]
    pa.field("duplicate_of", pa.string()),  # key of the kept sample, on dedup rejects only
):
    SCAN_SCHEMA = SCAN_SCHEMA.append(_f)

# What names an input in every reject row (scan, dedup and materialize rejects alike).
REJECT_ID_COLUMNS = ("seq", "source", "source_id", "key", "location")
REJECT_COLUMNS = [*REJECT_ID_COLUMNS, "stage", "reason", "detail", "duplicate_of"]
REJECT_SCHEMA = pa.schema([SCAN_SCHEMA.field(c) for c in REJECT_COLUMNS])

PLAN_EXTRA = [
    pa.field("bucket_w", pa.int32()),
    pa.field("bucket_h", pa.int32()),
    pa.field("crop_left", pa.int32()),
    pa.field("crop_top", pa.int32()),
    pa.field("crop_right", pa.int32()),
    pa.field("crop_bottom", pa.int32()),
    pa.field("bucket_upscale", pa.float64()),  # enlargement to fill the bucket, <= buckets.max_upscale
    # No weight, tier or quality quantile here: they change with the policy and the population, so
    # they live in weight versions (sharding/weights.py), never in the plan, manifest or shards.
    pa.field("shard", pa.string()),  # path relative to OUT
    pa.field("shard_pos", pa.int32()),  # position of the sample inside its shard
]
PLAN_COLUMNS = [
    "seq", "key", "source", "source_id", "location", "post_id", "rating", "score", "fav_count",
    "width", "height", "file_bytes", "sha256", *[f"tags_{c}" for c in TAG_CATEGORIES],
    "rating_era", "caption", "uncategorised_tags", *METRIC_COLUMNS, "phash", "learned_score", "quality_score",
]  # fmt: skip
PLAN_SCHEMA = pa.schema([SCAN_SCHEMA.field(c) for c in PLAN_COLUMNS] + PLAN_EXTRA)

MANIFEST_SCHEMA = pa.schema(
    [f for f in PLAN_SCHEMA if f.name not in ("location", "shard_pos")]
    + [pa.field("tags", pa.list_(pa.string())), pa.field("extractors", pa.list_(pa.string()))]
)
