"""Builders for real dump layouts in a test folder: HF tar + parquet, gwern, API JSON (no mocks)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
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


def write_tgz(path: str, members: dict[str, bytes]) -> None:
    """A ``.tar.gz`` as ``tar czf`` writes it (one gzip stream around a tar)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            add_member(tf, name, data)


def write_zip(path: str, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# KBlueLeaf's danbooru2023 metadata database, as its Peewee models (db.py) create it: table post
# (Danbooru columns, rating 0-3), table tag (type 0 general, 1 artist, 2 character, 3 copyright,
# 4 meta), the relation posttagrelation (post_id, tag_id) with the index Peewee puts on a foreign key.
KBLUELEAF_SCHEMA = """
CREATE TABLE "post" ("id" INTEGER NOT NULL PRIMARY KEY, "created_at" VARCHAR(255) NOT NULL,
  "uploader_id" INTEGER NOT NULL, "source" VARCHAR(255) NOT NULL, "md5" VARCHAR(255),
  "parent_id" INTEGER, "has_children" INTEGER NOT NULL, "is_deleted" INTEGER NOT NULL,
  "is_banned" INTEGER NOT NULL, "pixiv_id" INTEGER, "has_active_children" INTEGER NOT NULL,
  "bit_flags" INTEGER NOT NULL, "has_large" INTEGER NOT NULL, "has_visible_children" INTEGER NOT NULL,
  "image_width" INTEGER NOT NULL, "image_height" INTEGER NOT NULL, "file_size" INTEGER NOT NULL,
  "file_ext" VARCHAR(255) NOT NULL, "rating" INTEGER NOT NULL, "score" INTEGER NOT NULL,
  "up_score" INTEGER NOT NULL, "down_score" INTEGER NOT NULL, "fav_count" INTEGER NOT NULL,
  "file_url" VARCHAR(255), "large_file_url" VARCHAR(255), "preview_file_url" VARCHAR(255));
CREATE TABLE "tag" ("id" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(255) NOT NULL,
  "type" INTEGER NOT NULL, "popularity" INTEGER NOT NULL);
CREATE UNIQUE INDEX "tag_name" ON "tag" ("name");
CREATE TABLE "posttagrelation" ("id" INTEGER NOT NULL PRIMARY KEY, "post_id" INTEGER NOT NULL,
  "tag_id" INTEGER NOT NULL, FOREIGN KEY ("post_id") REFERENCES "post" ("id"),
  FOREIGN KEY ("tag_id") REFERENCES "tag" ("id"));
CREATE INDEX "posttagrelation_post_id" ON "posttagrelation" ("post_id");
CREATE INDEX "posttagrelation_tag_id" ON "posttagrelation" ("tag_id");
"""
KBLUELEAF_TYPES = {"general": 0, "artist": 1, "character": 2, "copyright": 3, "meta": 4}


def kblueleaf_db(path: str, posts: list[tuple[int, int, str, dict[str, list[str]]]]) -> str:
    """``posts``: (id, rating 0-3, file_ext, tags by category); relation rows written in a shuffled
    post order (the reader must not rely on insertion order)."""
    import sqlite3

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(KBLUELEAF_SCHEMA)
    tag_ids: dict[str, int] = {}
    pairs = []
    for post_id, rating, ext, tags in posts:
        con.execute(
            'INSERT INTO post VALUES (?, "2023-01-01", 1, "", ?, NULL, 0, 0, 0, NULL, 0, 0, 0, 0, 800, 1000, 1, ?, ?, 10, 10, 0, 5, NULL, NULL, NULL)',
            (post_id, f"{post_id:032x}", ext, rating),
        )
        for cat, names in tags.items():
            for name in names:
                if name not in tag_ids:
                    tag_ids[name] = len(tag_ids) + 1
                    con.execute(
                        "INSERT INTO tag VALUES (?, ?, ?, 1)", (tag_ids[name], name, KBLUELEAF_TYPES[cat])
                    )
                pairs.append((post_id, tag_ids[name]))
    for post_id, tag_id in sorted(pairs, key=lambda p: (-p[0], p[1])):
        con.execute("INSERT INTO posttagrelation (post_id, tag_id) VALUES (?, ?)", (post_id, tag_id))
    con.commit()
    con.close()
    return path
