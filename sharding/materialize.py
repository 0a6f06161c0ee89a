"""Materialize one shard: load, crop and resize to the bucket, extract lines, encode, write the tar.

Pure with respect to its inputs: the same plan rows and extractors give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from curation.decode import DecodeReject, decode_image, read_bytes
from curation.records import TAG_CATEGORIES

from .writer import ShardStats, write_shard

EXTRACT_CHUNK = 16  # images per extractor call: bounds memory for large buckets


@dataclass
class ShardResult:
    stats: ShardStats
    written: list[str]  # keys, in shard order
    rejects: list[dict[str, Any]] = field(default_factory=list)


def resize_to_bucket(rgb: np.ndarray, box: tuple[int, int, int, int], bucket: tuple[int, int]) -> np.ndarray:
    """Crop ``box`` (left, top, right, bottom) and resize it to exactly ``bucket`` (w, h)."""
    left, top, right, bottom = box
    crop = rgb[top:bottom, left:right]
    shrinking = crop.shape[1] >= bucket[0] and crop.shape[0] >= bucket[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(crop, bucket, interpolation=interp)


def encode_image(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if fmt == "webp":
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"could not encode {fmt}")
    return buf.tobytes()


def encode_lines(gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("could not encode png")
    return buf.tobytes()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def sample_json(row: Mapping[str, Any], extractors: Mapping[str, str]) -> bytes:
    meta = {
        "key": row["key"],
        # One JSON type per field (int or null, never a path string) so that schema-inferring
        # readers such as HF datasets accept a shard that mixes sources; source_id is the text id.
        "id": row.get("post_id"),
        "source": row["source"],
        "source_id": row["source_id"],
        "tags": {c: list(row.get(f"tags_{c}") or []) for c in TAG_CATEGORIES},
        "rating": row.get("rating"),
        "score": _clean(row.get("score")),
        "fav_count": row.get("fav_count"),
        "quality": _clean(row.get("quality")),
        "weight": row["weight"],
        "tier": row["tier"],
        "bucket": [row["bucket_w"], row["bucket_h"]],
        "extractors": dict(extractors),
        "original_size": [row["width"], row["height"]],
        "crop_box": [row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"]],
        "original_sha256": row.get("sha256"),
    }
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def materialize_shard(
    out: str,
    rows: list[dict[str, Any]],
    extractors: Mapping[str, Any],
    *,
    image_format: str,
    quality: int,
    max_pixels: int,
) -> ShardResult:
    """``rows``: plan rows of one shard in shard order; ``extractors``: name -> lineart callable."""
    shard = rows[0]["shard"]
    bucket = (int(rows[0]["bucket_w"]), int(rows[0]["bucket_h"]))
    images, good, rejects = [], [], []
    for row in rows:
        try:
            data = read_bytes(row["location"])
            if row.get("sha256"):
                if hashlib.sha256(data).hexdigest() != row["sha256"]:
                    raise DecodeReject("materialize_error", "file changed since the scan")
            rgb = decode_image(data, max_pixels).rgb
            if (rgb.shape[1], rgb.shape[0]) != (row["width"], row["height"]):
                raise DecodeReject("materialize_error", "size differs from the scan")
        except (OSError, DecodeReject) as exc:
            detail = exc.detail if isinstance(exc, DecodeReject) else f"{type(exc).__name__}: {exc}"
            rejects.append(
                {**_reject_ids(row), "stage": "pair", "reason": "materialize_error", "detail": detail}
            )
            continue
        box = (row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"])
        images.append(resize_to_bucket(rgb, box, bucket))
        good.append(row)

    lines: dict[str, np.ndarray] = {}
    if images:
        batch = np.stack(images)
        for name, fn in extractors.items():
            parts = [fn(batch[i : i + EXTRACT_CHUNK]) for i in range(0, len(batch), EXTRACT_CHUNK)]
            lines[name] = np.concatenate(parts)
    versions = {name: getattr(fn, "version", "?") for name, fn in extractors.items()}

    def samples():
        for i, row in enumerate(good):
            members = [
                (image_format, encode_image(images[i], image_format, quality)),
                ("json", sample_json(row, versions)),
            ]
            members += [(f"lineart.{name}.png", encode_lines(lines[name][i])) for name in extractors]
            yield row["key"], members

    stats = write_shard(out, shard, samples())
    return ShardResult(stats, [r["key"] for r in good], rejects)


def _reject_ids(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("seq", "source", "source_id", "key", "location")}
