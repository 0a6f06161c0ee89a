"""A sample's ``.json`` member: its fields, one JSON type each, and the HF ``datasets`` features.

Schema-inferring readers take a field's type from the first samples they see: HF ``datasets``'
webdataset builder reads the first five samples of the first tar, so a field that is ``null`` (or
an empty list) in all of them and typed later fails the whole load. No field here is ever null or a
list that may be empty: an absent value is a documented sentinel of the field's own type, and tags
are Danbooru tag strings (space-separated; a tag never holds whitespace, curation/sources).

``dataset_card`` writes the features out exactly (OUT/README.md), so ``load_dataset(OUT)`` (or the
Hub, once OUT is uploaded) needs no inference at all, and names the build's content (the sha256 of
``shards.json``): HF ``datasets`` caches a local folder under its name and a hash of the card's YAML,
so two builds with one folder name, or a build before and after an append, would otherwise share a
cache entry and ``load_dataset`` would serve the other build's rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from curation.metrics import METRIC_COLUMNS
from curation.records import TAG_CATEGORIES
from groundwork.contract import drawing_member
from lineart.augment import OP_PARAMS

NO_ID = -1  # `id` of a sample whose source has no post id (a folder); post ids are >= 1
NO_COUNT = -1  # `fav_count` without one
NOT_MEASURED = -1.0  # a metric or quality_score that was not measured (every one is >= 0)
NO_RATING = ""  # `rating` without one (Danbooru's are g, s, q, e)
NO_CAPTION = ""  # `caption` of a sample without prose (every Danbooru post)


def _float(value: Any) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_MEASURED
    return float(value)


def _int(value: Any, missing: int) -> int:
    return missing if value is None else int(value)


def tag_string(tags: Sequence[str] | None) -> str:
    return " ".join(tags or ())


def tags_of(meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """The tags of a parsed sample JSON as lists per category (contract 3 strings; contract 2 lists)."""
    raw = meta.get("tags") or {}
    return {c: (v.split() if isinstance(v, str) else list(v or [])) for c, v in raw.items()}


def decode(data: bytes) -> dict[str, Any]:
    """A sample JSON as Python readers want it: the fields as written, tags as lists per category."""
    meta = json.loads(data)
    meta["tags"] = tags_of(meta)
    return meta


def encode(
    row: Mapping[str, Any],
    versions: Mapping[str, str],
    augmented: Mapping[str, Any] | None = None,
    dropped: Mapping[str, str] | None = None,
) -> bytes:
    """``versions``: every extractor of the build -> its version; ``dropped``: name -> why that
    drawing is not stored (pair quality); ``augmented``: name -> augmentation record of each stored
    drawing (present when augmentation is on).

    Only facts that never change: no weight, tier or quality quantile (those are weight versions,
    sharding/weights.py), so a reweight or an append never rewrites a shard."""
    dropped = dropped or {}
    score = row.get("score")
    has_score = score is not None and not (isinstance(score, float) and math.isnan(score))
    meta = {
        "key": row["key"],
        "id": _int(row.get("post_id"), NO_ID),
        "source": row["source"],
        "source_id": row["source_id"],
        "tags": {c: tag_string(row.get(f"tags_{c}")) for c in TAG_CATEGORIES},
        "caption": row.get("caption") or NO_CAPTION,  # prose beside the tags (a folder's sentence)
        "rating": row.get("rating") or NO_RATING,
        "score": float(score) if has_score else 0.0,
        "has_score": has_score,  # Danbooru scores can be negative: no sentinel is out of range
        "fav_count": _int(row.get("fav_count"), NO_COUNT),
        "quality_score": _float(row.get("quality_score")),
        "metrics": {c: _float(row.get(c)) for c in METRIC_COLUMNS},
        "bucket": [row["bucket_w"], row["bucket_h"]],
        "extractors": dict(versions),
        # every extractor, "" when its drawing is stored: the same keys in every sample of a build
        "dropped_lines": {name: dropped.get(name, "") for name in versions},
        "original_size": [row["width"], row["height"]],
        "crop_box": [row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"]],
        "original_sha256": row.get("sha256") or "",
    }
    if augmented is not None:
        meta["augment"] = dict(augmented)
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------- HF datasets features

_DTYPE = {int: "int64", float: "float64", str: "string", bool: "bool"}


def _value(name: str, dtype: str) -> dict[str, Any]:
    return {"name": name, "dtype": dtype}


def _struct(name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "struct": fields}


def json_features(extractors: Sequence[str], augment: bool) -> dict[str, Any]:
    """The ``json`` member as HF ``datasets`` YAML features (the form a dataset card holds)."""
    fields = [
        _value("key", "string"),
        _value("id", "int64"),
        _value("source", "string"),
        _value("source_id", "string"),
        _struct("tags", [_value(c, "string") for c in TAG_CATEGORIES]),
        _value("caption", "string"),
        _value("rating", "string"),
        _value("score", "float64"),
        _value("has_score", "bool"),
        _value("fav_count", "int64"),
        _value("quality_score", "float64"),
        _struct("metrics", [_value(c, "float64") for c in METRIC_COLUMNS]),
        {"name": "bucket", "list": "int64"},
        _struct("extractors", [_value(e, "string") for e in extractors]),
        _struct("dropped_lines", [_value(e, "string") for e in extractors]),
        {"name": "original_size", "list": "int64"},
        {"name": "crop_box", "list": "int64"},
        _value("original_sha256", "string"),
    ]
    if augment:
        ops = [
            _struct(op, [_value(p, _DTYPE[t]) for p, t in params.items()]) for op, params in OP_PARAMS.items()
        ]
        fields.append(_struct("augment", [_struct(e, ops) for e in extractors]))
    return _struct("json", sorted(fields, key=lambda f: f["name"]))


def features(
    extractors: Sequence[str], image_format: str, augment: bool, txt: bool = True
) -> list[dict[str, Any]]:
    """Every member of a sample (a missing drawing reads as None) plus the loader's own columns;
    ``txt``: the shards carry the caption member (contract 4 on)."""
    return [
        _value("__key__", "string"),
        _value("__url__", "string"),
        _value(image_format, "image"),
        json_features(extractors, augment),
        *([_value("txt", "string")] if txt else []),
        *(_value(drawing_member(e), "image") for e in extractors),
    ]


def dataset_card(
    extractors: Sequence[str], image_format: str, augment: bool, fingerprint: str, txt: bool = True
) -> str:
    """OUT/README.md: an HF dataset card whose YAML names the shards, their exact features and the
    build's ``fingerprint`` (sha256 of shards.json).

    The fingerprint sits in the config's ``description``: HF hashes the card's configs and features
    (not its prose) into the cache path, so it must be there to keep two builds apart. The front
    matter is JSON, which is YAML too (no YAML writer needed)."""
    config = {
        "config_name": "default",
        "description": f"linepairs build; shards.json sha256 {fingerprint}",
        "data_files": [{"split": "train", "path": "shards/*/*.tar"}],
    }
    meta = {
        "configs": [config],
        "dataset_info": {
            "config_name": "default",
            "features": features(extractors, image_format, augment, txt),
        },
    }
    caption = "`txt` is its caption from the tags (docs/output.md); " if txt else ""
    return (
        "---\n"
        + json.dumps(meta, indent=1)
        + "\n---\n"
        + "# linepairs build\n\n"
        + "Illustration / line-drawing pairs in WebDataset tar shards (`shards/{w}x{h}/*.tar`), written by\n"
        + f"linepairs. {caption}`manifest.parquet` lists every sample, `weights/` its sampling weights,\n"
        + "`rejects.parquet` every input left out and why. With HF `datasets`:\n"
        + '`load_dataset("path/to/OUT", split="train")`.\n\n'
        + f"Build fingerprint: sha256 of `shards.json` = `{fingerprint}` (rewritten by every append and retry).\n"
    )
