"""A plain folder of images (recursive) with optional kohya-style caption sidecars.

``name.txt`` or ``name.caption`` beside ``name.png`` (``[sidecars] caption_extensions``, the first
that exists wins) holds comma-separated tags, a prose caption, or tags then prose; the rule that
tells them apart is in ``sidecars.py``. Tags get their Danbooru category from the tag table when one
is given (``[sidecars] tag_table``), ``general`` otherwise (counted in ``uncategorised_tags``).

A caption file gets the metadata-file policy (``common.metadata_refusal``): one that links out of
the folder or is not a regular file (a FIFO) is never opened, and its image is rejected with that
reason (``outside_source`` / ``bad_metadata``) rather than kept without the tags it was given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..records import TAG_CATEGORIES, Record
from ..storage import SourceStorage, is_remote, relpath
from .common import IMAGE_EXTS, metadata_refusal, read_small, walk_files, walk_tree
from .dump import DEFAULT_OPTIONS, ReadOptions
from .sidecars import SIDECAR_MAX_BYTES, decode_text, parse_caption


def read_sidecar(
    path: str, storage: SourceStorage | None = None, options: ReadOptions = DEFAULT_OPTIONS
) -> tuple[dict[str, list[str]], str | None, int]:
    """(tags by category, prose caption, tags without a category) of one caption file; a BOM is
    dropped and invalid UTF-8 replaced, never fatal."""
    text = decode_text(read_small(path, SIDECAR_MAX_BYTES, storage))
    return parse_caption(text, options.tag_table)


def _record(
    source: str, root: str, rel: str, path: str, ext: str, sidecar: str | None, storage, options: ReadOptions
) -> Record:
    rec = Record(source, rel, path, ext=ext.lower(), tags={c: [] for c in TAG_CATEGORIES})
    if sidecar is None:
        return rec
    refused = metadata_refusal(sidecar, root, storage)  # a link out of the folder, a FIFO: not opened
    try:
        if refused is None:
            rec.tags, rec.caption, rec.uncategorised_tags = read_sidecar(sidecar, storage, options)
    except OSError as exc:  # unreadable, or swapped for a FIFO since the listing
        refused = f"cannot be read ({exc.strerror or exc})"
    if refused is not None:
        rec.location = None
        rec.reject_reason = getattr(refused, "reason", "bad_metadata")
        rec.reject_detail = f"caption file {relpath(sidecar, root)}: {refused}"[:300]
    return rec


def iter_folder(
    source: str, folder: str, storage: SourceStorage | None = None, options: ReadOptions = DEFAULT_OPTIONS
) -> Iterator[Record]:
    if is_remote(folder):
        yield from _iter_objects(source, folder, storage, options)
        return
    for root, dirs, files in walk_tree(folder):  # os.walk without recursion (deep chains)
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        present = set(files)
        for name in sorted(files):
            stem, dot, ext = name.rpartition(".")
            if not dot or ext.lower() not in IMAGE_EXTS or name.startswith("."):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            # the first caption extension present; _record applies the metadata-file policy to it
            sidecar = next(
                (os.path.join(root, stem + c) for c in options.captions if stem + c in present), None
            )
            yield _record(source, folder, rel, path, ext, sidecar, None, options)


def _iter_objects(
    source: str, folder: str, storage: SourceStorage | None, options: ReadOptions
) -> Iterator[Record]:
    """The same records for a folder on object storage: one listing, sidecars found in it."""
    files = walk_files(folder, storage)
    present = set(files)
    for path in sorted(files, key=lambda p: _walk_order(relpath(p, folder))):
        name = path.rpartition("/")[2]
        stem, dot, ext = name.rpartition(".")
        if not dot or ext.lower() not in IMAGE_EXTS:
            continue
        base = f"{path.rpartition('/')[0]}/{stem}"
        sidecar = next((base + cap for cap in options.captions if base + cap in present), None)
        yield _record(source, folder, relpath(path, folder), path, ext, sidecar, storage, options)


def _walk_order(rel: str) -> tuple[tuple[int, str], ...]:
    """os.walk's order (a folder's files, then its sorted subfolders), so both give the same seq."""
    *dirs, name = rel.split("/")
    return (*((1, d) for d in dirs), (0, name))
