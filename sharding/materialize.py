"""Materialize one shard: load, crop and resize to the bucket, extract lines, augment, check pair
quality, encode, write the tar (illustration, json, the caption as ``txt``, one PNG per drawing).

Pure with respect to its inputs: the same plan rows and extractors give the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from curation.decode import DEFAULT_MAX_BYTES, DecodeReject, decode_for_crop, scaled_box
from curation.fetch import read_location
from groundwork.contract import drawing_member
from lineart.augment import AugmentPolicy, augment, sample_seed
from lineart.quality import PairQuality, judge

from . import samplejson
from .captions import caption_of_row
from .layout import Layout
from .schema import REJECT_ID_COLUMNS
from .writer import ShardStats, write_shard

EXTRACT_CHUNK = 16  # images per extractor call: bounds memory for large buckets


@dataclass
class ShardResult:
    stats: ShardStats
    written: list[str]  # keys, in shard order
    rejects: list[dict[str, Any]] = field(default_factory=list)
    # key -> extractor -> why that drawing was dropped (pair quality); the sample itself was written
    dropped: dict[str, dict[str, str]] = field(default_factory=dict)


def resize_to_bucket(
    rgb: np.ndarray, box: tuple[int, int, int, int], bucket: tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """Crop ``box`` (left, top, right, bottom) and resize it to exactly ``bucket`` (w, h); into
    ``out`` (``bucket[1] x bucket[0] x 3`` uint8, C-contiguous) when given: a shard's batch is
    filled in place instead of stacked from copies."""
    left, top, right, bottom = box
    crop = rgb[top:bottom, left:right]
    shrinking = crop.shape[1] >= bucket[0] and crop.shape[0] >= bucket[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    if out is None:
        return cv2.resize(crop, bucket, interpolation=interp)
    resized = cv2.resize(crop, bucket, dst=out, interpolation=interp)
    if not np.shares_memory(resized, out):  # OpenCV made its own: copy it in
        out[...] = resized
    return out


def bucket_image(
    data: bytes,
    max_pixels: int,
    size: tuple[int, int],
    box: tuple[int, int, int, int],
    bucket: tuple[int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The bucket image of an input's bytes: a JPEG decoded at the DCT scale that still covers the
    crop (``curation.decode.decode_for_crop``), then cropped and resized. Within the tolerance of
    docs/scale.md of the full decode's crop (tests/test_decode_reduced.py).

    ``size``: (width, height) the scan measured; DecodeReject ``materialize_error`` if it differs.
    """
    decoded = decode_for_crop(data, max_pixels, box, bucket)
    if decoded.size != tuple(size):
        raise DecodeReject("materialize_error", "size differs from the scan")
    return resize_to_bucket(decoded.rgb, scaled_box(box, decoded.scale), bucket, out)


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


def materialize_shard(
    out: Layout | str,
    rows: list[dict[str, Any]],
    extractors: Mapping[str, Any],
    *,
    image_format: str,
    quality: int,
    max_pixels: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    storage: Any = None,
    augment_policy: AugmentPolicy | None = None,
    pair_quality: PairQuality | None = None,
    seed: int = 0,
) -> ShardResult:
    """``rows``: plan rows of one shard in shard order; ``extractors``: name -> lineart callable.

    With ``augment_policy.enabled`` every drawing is augmented with parameters drawn from
    ``sample_seed(seed, key, extractor)``; with ``pair_quality.enabled`` a drawing that fails the
    verdict is dropped, and a sample none of whose drawings survives is rejected (stage "pair").
    """
    shard = rows[0]["shard"]
    bucket = (int(rows[0]["bucket_w"]), int(rows[0]["bucket_h"]))
    # the shard's images, written in place (a stack of copies cost ~1 ms a sample): rows 0..len(good)
    batch = np.empty((len(rows), bucket[1], bucket[0], 3), np.uint8)
    good, rejects = [], []
    for row in rows:
        try:
            data = read_location(row["location"], max_bytes, storage)
            if row.get("sha256"):
                if hashlib.sha256(data).hexdigest() != row["sha256"]:
                    raise DecodeReject("materialize_error", "file changed since the scan")
            box = (row["crop_left"], row["crop_top"], row["crop_right"], row["crop_bottom"])
            bucket_image(data, max_pixels, (row["width"], row["height"]), box, bucket, batch[len(good)])
        except (OSError, DecodeReject) as exc:
            detail = exc.detail if isinstance(exc, DecodeReject) else f"{type(exc).__name__}: {exc}"
            rejects.append(
                {**_reject_ids(row), "stage": "pair", "reason": "materialize_error", "detail": detail}
            )
            continue
        good.append(row)

    images = batch[: len(good)]
    # name -> the drawings of each chunk of EXTRACT_CHUNK images; a drawing is read in place from
    # its chunk (one concatenated array per extractor copied every drawing: ~1.2 ms a sample)
    lines: dict[str, list[np.ndarray]] = {}
    if good:
        for name, fn in extractors.items():
            lines[name] = [fn(images[i : i + EXTRACT_CHUNK]) for i in range(0, len(images), EXTRACT_CHUNK)]
    versions = {name: getattr(fn, "version", "?") for name, fn in extractors.items()}
    augmenting = augment_policy is not None and augment_policy.enabled
    checking = pair_quality is not None and pair_quality.enabled

    written, dropped, members_of = [], {}, {}
    for i, row in enumerate(good):
        kept, records, why = {}, {}, {}
        for name in extractors:
            drawing = lines[name][i // EXTRACT_CHUNK][i % EXTRACT_CHUNK]
            if augmenting:
                drawing, records[name] = augment(drawing, augment_policy, sample_seed(seed, row["key"], name))
            if checking:
                problem, reason, _ = judge(drawing, pair_quality)
                if problem != "ok":
                    why[name] = f"{problem}: {reason}"
                    continue
            kept[name] = drawing
        if not kept:
            problems = {w.split(":", 1)[0] for w in why.values()}
            reason = f"lines_{problems.pop()}" if len(problems) == 1 else "lines_unusable"
            detail = "; ".join(f"{n}: {w}" for n, w in why.items())
            rejects.append({**_reject_ids(row), "stage": "pair", "reason": reason, "detail": detail})
            continue
        if why:
            dropped[row["key"]] = why
        meta = samplejson.encode(row, versions, {n: records[n] for n in kept} if augmenting else None, why)
        members = [(image_format, encode_image(images[i], image_format, quality)), ("json", meta)]
        # the caption from the tags (one rule: sharding/captions.py); "" for a sample without tags
        members.append(("txt", caption_of_row(row).text.encode("utf-8")))
        members += [(drawing_member(name), encode_lines(d)) for name, d in kept.items()]
        members_of[row["key"]] = members
        written.append(row["key"])

    stats = write_shard(out, shard, ((key, members_of.pop(key)) for key in written))
    return ShardResult(stats, written, rejects, dropped)


def _reject_ids(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in REJECT_ID_COLUMNS}
