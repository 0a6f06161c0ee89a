"""A plain folder of images (recursive) with optional kohya-style ``.txt`` tag sidecars."""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..records import TAG_CATEGORIES, Record
from ..storage import SourceStorage, is_remote, relpath
from .common import IMAGE_EXTS, leaves_root, read_small, tag_name, walk_files, walk_tree

SIDECAR_MAX_BYTES = 1 << 20  # tags, not a novel: a larger (or sparse) .txt is read only this far


def read_sidecar(path: str, storage: SourceStorage | None = None) -> list[str]:
    """Comma-separated tags (inner spaces become ``_``, Danbooru's spelling: "blue hair" is the tag
    blue_hair); a BOM is dropped and invalid UTF-8 is replaced, never fatal."""
    raw = read_small(path, SIDECAR_MAX_BYTES, storage)
    text = raw.decode("utf-8-sig", errors="replace").replace("\ufffd", "")
    return [tag for t in text.replace("\n", ",").split(",") if (tag := tag_name(t))]


def iter_folder(source: str, folder: str, storage: SourceStorage | None = None) -> Iterator[Record]:
    if is_remote(folder):
        yield from _iter_objects(source, folder, storage)
        return
    for root, dirs, files in walk_tree(folder):  # os.walk without recursion (deep chains)
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            stem, dot, ext = name.rpartition(".")
            if not dot or ext.lower() not in IMAGE_EXTS or name.startswith("."):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            tags = {c: [] for c in TAG_CATEGORIES}
            sidecar = os.path.join(root, stem + ".txt")
            # isfile: a FIFO or device named .txt is never opened; a link leaving the folder is not read
            if os.path.isfile(sidecar) and leaves_root(folder, sidecar) is None:
                tags["general"] = read_sidecar(sidecar)
            yield Record(source, rel, path, ext=ext.lower(), tags=tags)


def _iter_objects(source: str, folder: str, storage: SourceStorage | None) -> Iterator[Record]:
    """The same records for a folder on object storage: one listing, sidecars found in it."""
    files = walk_files(folder, storage)
    present = set(files)
    for path in sorted(files, key=lambda p: _walk_order(relpath(p, folder))):
        name = path.rpartition("/")[2]
        stem, dot, ext = name.rpartition(".")
        if not dot or ext.lower() not in IMAGE_EXTS:
            continue
        tags = {c: [] for c in TAG_CATEGORIES}
        sidecar = f"{path.rpartition('/')[0]}/{stem}.txt"
        if sidecar in present:
            tags["general"] = read_sidecar(sidecar, storage)
        yield Record(source, relpath(path, folder), path, ext=ext.lower(), tags=tags)


def _walk_order(rel: str) -> tuple[tuple[int, str], ...]:
    """os.walk's order (a folder's files, then its sorted subfolders), so both give the same seq."""
    *dirs, name = rel.split("/")
    return (*((1, d) for d in dirs), (0, name))
