"""gwern's Danbooru2017-2021 layout: metadata JSON lines, ``original/NNNN/ID.ext``, ``512px/NNNN/ID.jpg``.

``NNNN`` is ``ID % 1000`` as four digits. The original is preferred; the 512px copy is the fallback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..records import Record
from ..storage import SourceStorage, is_remote, join, relpath
from .common import IMAGE_EXTS, attach_image, is_dir, iter_json_posts, record_from_post, walk_files


def metadata_files(root: str, storage: SourceStorage | None = None) -> list[str]:
    """Every JSON(L) metadata file of the dump: ``metadata/**`` first, else top-level files."""
    meta_dir = join(root, "metadata")
    base = meta_dir if is_dir(meta_dir, storage) else root
    files = [  # walk_files: folder links are not followed, so a link loop cannot repeat the posts
        p
        for p in walk_files(base, storage)
        if p.lower().endswith((".json", ".jsonl"))
        and (is_remote(p) or os.path.isfile(p))
        and not p.rpartition("/")[2].startswith(("tags", "artists", "notes", "pools"))
    ]
    if base == root:
        files = [p for p in files if "/" not in relpath(p, root)]
    return sorted(set(files))


def looks_like_gwern(root: str, storage: SourceStorage | None = None) -> bool:
    return is_dir(root, storage) and (
        is_dir(join(root, "original"), storage) or is_dir(join(root, "512px"), storage)
    )


def image_path(root: str, post_id: int, ext: str | None, present: set[str] | None = None) -> str | None:
    """The post's original, else its 512px copy; ``present``: the listing of a dump on a store."""
    isfile = os.path.isfile if present is None else present.__contains__
    bucket = f"{post_id % 1000:04d}"
    exts = [ext] if ext else []
    exts += [e for e in sorted(IMAGE_EXTS) if e != ext]
    for e in exts:
        p = join(root, "original", bucket, f"{post_id}.{e}")
        if isfile(p):
            return p
    p = join(root, "512px", bucket, f"{post_id}.jpg")
    return p if isfile(p) else None


def iter_gwern(
    source: str, root: str, era: str | None = "old", storage: SourceStorage | None = None
) -> Iterator[Record]:
    """gwern's dumps (2017-2021) predate the 2022 rating change: ``s`` is safe unless told otherwise."""
    # On a store, one listing instead of a request per candidate name.
    present = set(walk_files(root, storage)) if is_remote(root) else None
    for meta in metadata_files(root, storage):
        for pos, post in iter_json_posts(meta, storage, root=root):  # links leaving the dump: not read
            rec = record_from_post(source, post, f"{relpath(meta, root)}:{pos}", era=era)
            path = image_path(root, rec.post_id, rec.ext, present) if rec.reject_reason is None else None
            yield attach_image(rec, path, f"neither original/ nor 512px/ has post {rec.post_id}")
