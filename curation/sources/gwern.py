"""gwern's Danbooru2017-2021 layout: metadata JSON lines, ``original/NNNN/ID.ext``, ``512px/NNNN/ID.jpg``.

``NNNN`` is ``ID % 1000`` as four digits. The original is preferred; the 512px copy is the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..records import Record
from .common import IMAGE_EXTS, attach_image, iter_json_posts, record_from_post, walk_files


def metadata_files(root: str) -> list[str]:
    """Every JSON(L) metadata file of the dump: ``metadata/**`` first, else top-level files."""
    meta_dir = os.path.join(root, "metadata")
    base = meta_dir if os.path.isdir(meta_dir) else root
    files = [  # walk_files: folder links are not followed, so a link loop cannot repeat the posts
        p
        for p in walk_files(base)
        if p.lower().endswith((".json", ".jsonl"))
        and os.path.isfile(p)
        and not os.path.basename(p).startswith(("tags", "artists", "notes", "pools"))
    ]
    if base == root:
        files = [p for p in files if os.path.dirname(p) == root]
    return sorted(set(files))


def looks_like_gwern(root: str) -> bool:
    return os.path.isdir(root) and (
        os.path.isdir(os.path.join(root, "original")) or os.path.isdir(os.path.join(root, "512px"))
    )


def image_path(root: str, post_id: int, ext: str | None) -> str | None:
    bucket = f"{post_id % 1000:04d}"
    exts = [ext] if ext else []
    exts += [e for e in sorted(IMAGE_EXTS) if e != ext]
    for e in exts:
        p = os.path.join(root, "original", bucket, f"{post_id}.{e}")
        if os.path.isfile(p):
            return p
    p = os.path.join(root, "512px", bucket, f"{post_id}.jpg")
    return p if os.path.isfile(p) else None


def iter_gwern(source: str, root: str, era: str | None = "old") -> Iterator[Record]:
    """gwern's dumps (2017-2021) predate the 2022 rating change: ``s`` is safe unless told otherwise."""
    for meta in metadata_files(root):
        for pos, post in iter_json_posts(meta):
            rec = record_from_post(source, post, f"{os.path.relpath(meta, root)}:{pos}", era=era)
            path = image_path(root, rec.post_id, rec.ext) if rec.reject_reason is None else None
            yield attach_image(rec, path, f"neither original/ nor 512px/ has post {rec.post_id}")
