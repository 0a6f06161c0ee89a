"""Scan one input: decode it safely and apply the first pixel filters. Pure, no Ray."""

from __future__ import annotations

import hashlib
from typing import Any

from .decode import DecodeReject, decode_image, read_bytes


def reject(row: dict[str, Any], stage: str, reason: str, detail: str) -> dict[str, Any]:
    row.update(status="rejected", stage=stage, reason=reason, detail=detail)
    return row


def scan_row(row: dict[str, Any], *, max_pixels: int, min_side: int, max_aspect: float) -> dict[str, Any]:
    """Fill ``width``, ``height``, ``file_bytes``, ``sha256`` and the verdict of one record row."""
    row = dict(row)
    row.update(status="kept", stage=None, reason=None, detail=None, file_bytes=None, sha256=None)
    if row.get("reject_reason"):
        return reject(row, "metadata", row["reject_reason"], row.get("reject_detail") or "")
    try:
        data = read_bytes(row["location"])
    except OSError as exc:
        return reject(row, "metadata", "missing_file", f"{type(exc).__name__}: {exc}"[:300])
    row["file_bytes"] = len(data)
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        img = decode_image(data, max_pixels).rgb
    except DecodeReject as rej:
        return reject(row, "decode", rej.reason, rej.detail)
    h, w = img.shape[:2]
    row["width"], row["height"] = w, h
    if min(w, h) < min_side:
        return reject(row, "decode", "too_small", f"{w}x{h}: shorter side < {min_side}")
    if max(w, h) / min(w, h) > max_aspect:
        return reject(
            row,
            "decode",
            "aspect_out_of_range",
            f"{w}x{h}: aspect {max(w, h) / min(w, h):.2f} > {max_aspect}",
        )
    return row
