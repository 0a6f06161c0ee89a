"""Builders for real dump layouts in a test folder: HF tar + parquet, gwern, API JSON (no mocks)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SAMPLES = os.path.join("corpus", "danbooru_metadata_samples")


def add_member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def add_symlink(tf: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tf.addfile(info)


def write_tar(path: str, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            add_member(tf, name, data)
        for name, target in (symlinks or {}).items():
            add_symlink(tf, name, target)


def write_parquet(path: str, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def hf_row(post_id: Any, ext: str = "jpg", **extra: Any) -> dict[str, Any]:
    """A danbooru2024-style parquet row (tag_string_* columns, new-era rating letters)."""
    row = {
        "id": post_id, "md5": f"{int(post_id) if str(post_id).isdigit() else 0:032x}", "file_ext": ext,
        "image_width": 800, "image_height": 1000, "rating": "g", "score": 10, "fav_count": 5,
        "tag_string_general": "1girl solo long_hair smile looking_at_viewer", "tag_string_artist": "someone",
        "tag_string_character": "", "tag_string_copyright": "original", "tag_string_meta": "highres",
        "is_deleted": False,
    }  # fmt: skip
    row.update(extra)
    return row


def gwern_dump(root: str, shared: str, image: str) -> str:
    """gwern 2017-2020 layout with the one real metadata line and its image at original/0162/263162.jpg."""
    os.makedirs(os.path.join(root, "metadata"), exist_ok=True)
    shutil.copy(os.path.join(shared, SAMPLES, "gwern_danbooru2017-2020_posts_record.jsonl"),
                os.path.join(root, "metadata", "posts.jsonl"))  # fmt: skip
    os.makedirs(os.path.join(root, "original", "0162"), exist_ok=True)
    shutil.copy(image, os.path.join(root, "original", "0162", "263162.jpg"))
    return root


def api_dump(root: str, shared: str, images: dict[int, str]) -> tuple[str, list[dict[str, Any]]]:
    """The real 2020 API array, with corpus images saved as ``{id}.{file_ext}`` for the ids given."""
    os.makedirs(root, exist_ok=True)
    src = os.path.join(shared, SAMPLES, "api_posts_2020_imgbrd-grabber.json")
    shutil.copy(src, os.path.join(root, "posts.json"))
    with open(src, encoding="utf-8") as fh:
        posts = json.load(fh)
    ext_of = {p["id"]: p["file_ext"] for p in posts}
    for post_id, image in images.items():
        shutil.copy(image, os.path.join(root, f"{post_id}.{ext_of[post_id]}"))
    return root, posts
