"""Check a finished build against its own records: shards.json, the manifest and every tar member."""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from typing import Any

from PIL import Image

from .layout import Layout

IMAGE_EXTS = ("jpg", "webp")


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def verify_shard(out: Layout | str, entry: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[str]:
    """Faults of one shard; ``rows`` are its manifest rows by key."""
    layout = out if isinstance(out, Layout) else Layout(out)
    rel = entry["path"]
    path = layout.shard(rel)
    size = layout.size(path)
    if size is None:
        return [f"{rel}: missing"]
    faults = []
    if size != entry["bytes"]:
        faults.append(f"{rel}: {size} bytes, shards.json says {entry['bytes']}")
    if layout.sha256(path) != entry["sha256"]:
        faults.append(f"{rel}: sha256 differs from shards.json")
    members: dict[str, dict[str, bytes]] = defaultdict(dict)
    try:
        with layout.open_input_file(path) as fh, tarfile.open(fileobj=fh) as tar:
            for info in tar:
                if not info.isfile():
                    faults.append(f"{rel}: member {info.name} is not a regular file")
                    continue
                key, dot, ext = info.name.partition(".")
                if not dot or "/" in info.name:
                    faults.append(f"{rel}: unexpected member name {info.name!r}")
                    continue
                members[key][ext] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError) as exc:
        return faults + [f"{rel}: unreadable tar ({exc})"]
    if len(members) != entry["samples"]:
        faults.append(f"{rel}: {len(members)} samples, shards.json says {entry['samples']}")
    for key in sorted(set(members) - set(rows)):
        faults.append(f"{rel}: sample {key} is not in the manifest")
    for key, row in sorted(rows.items()):
        if key not in members:
            faults.append(f"{rel}: manifest sample {key} is missing from the shard")
            continue
        faults += _check_sample(rel, key, members[key], row)
    return faults


def _check_sample(rel: str, key: str, files: dict[str, bytes], row: dict[str, Any]) -> list[str]:
    faults = []
    where = f"{rel}: {key}"
    image_ext = next((e for e in IMAGE_EXTS if e in files), None)
    expected = {"json", *(f"lineart.{x}.png" for x in row["extractors"])}
    missing = sorted(expected - set(files)) + ([] if image_ext else ["jpg|webp"])
    if missing:
        faults.append(f"{where}: missing {', '.join(missing)}")
    extra = sorted(set(files) - expected - {image_ext})
    if extra:
        faults.append(f"{where}: unexpected member(s) {', '.join(extra)}")
    size = (row["bucket_w"], row["bucket_h"])
    if image_ext:
        try:
            im = _decode(files[image_ext])
            if im.size != size:
                faults.append(
                    f"{where}: illustration is {im.size[0]}x{im.size[1]}, bucket is {size[0]}x{size[1]}"
                )
        except Exception as exc:  # any decoder failure is a fault to report, not a crash
            faults.append(f"{where}: illustration does not decode ({exc})")
    for name in row["extractors"]:
        data = files.get(f"lineart.{name}.png")
        if data is None:
            continue
        try:
            im = _decode(data)
            if im.size != size or im.mode != "L":
                faults.append(
                    f"{where}: lineart.{name}.png is {im.size[0]}x{im.size[1]} {im.mode}, want {size} L"
                )
        except Exception as exc:
            faults.append(f"{where}: lineart.{name}.png does not decode ({exc})")
    if "json" in files:
        try:
            meta = json.loads(files["json"])
            if meta.get("weight") != row["weight"]:
                faults.append(f"{where}: json weight {meta.get('weight')} != manifest weight {row['weight']}")
            if meta.get("key") != key:
                faults.append(f"{where}: json key {meta.get('key')!r} != {key!r}")
        except ValueError as exc:
            faults.append(f"{where}: json does not parse ({exc})")
    return faults


def verify_build(out: Layout | str) -> list[str]:
    """Every fault found in OUT (a path or URL); an empty list means the build is sound."""
    layout = out if isinstance(out, Layout) else Layout(out)
    for path in (layout.shards_json, layout.manifest):
        if layout.size(path) is None:
            return [f"{layout.out}: no {layout.rel(path)} (not a finished build)"]
    shards = layout.read_json(layout.shards_json)["shards"]
    manifest = layout.read_parquet(
        layout.manifest,
        columns=["key", "shard", "bucket_w", "bucket_h", "weight", "extractors"],
    ).to_pylist()
    by_shard: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    faults = []
    for row in manifest:
        if row["key"] in by_shard[row["shard"]]:
            faults.append(f"manifest: key {row['key']} appears twice")
        by_shard[row["shard"]][row["key"]] = row
    listed = {e["path"] for e in shards}
    for shard in sorted(set(by_shard) - listed):
        faults.append(f"manifest: shard {shard} is not in shards.json")
    for entry in shards:
        faults += verify_shard(layout, entry, by_shard.get(entry["path"], {}))
    return faults
