"""A plain folder of images (recursive) with optional kohya-style caption sidecars.

``name.txt`` or ``name.caption`` beside ``name.png`` (``[sidecars] caption_extensions``, the first
that exists wins) holds comma-separated tags, a prose caption, or tags then prose; the rule that
tells them apart is in ``sidecars.py``. Tags get their Danbooru category from the tag table when one
is given (``[sidecars] tag_table``), ``general`` otherwise (counted in ``uncategorised_tags``).

A caption file gets the metadata-file policy (``common.metadata_refusal``): one that links out of
the folder or is not a regular file (a FIFO) is never opened; it is one reject row of its own
(``outside_source`` / ``bad_metadata``, keyed by its path), the next caption extension is tried, and
the image is read as one without a caption file (no tags), as before the policy moved here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..records import TAG_CATEGORIES, Record
from ..storage import SourceStorage, is_remote, relpath
from .common import IMAGE_EXTS, Refused, metadata_refusal, read_small, walk_files, walk_tree
from .dump import DEFAULT_OPTIONS, ReadOptions
from .sidecars import SIDECAR_MAX_BYTES, decode_text, parse_caption


def read_sidecar(
    path: str, storage: SourceStorage | None = None, options: ReadOptions = DEFAULT_OPTIONS
) -> tuple[dict[str, list[str]], str | None, int]:
    """(tags by category, prose caption, tags without a category) of one caption file; a BOM is
    dropped and invalid UTF-8 replaced, never fatal."""
    text = decode_text(read_small(path, SIDECAR_MAX_BYTES, storage))
    return parse_caption(text, options.tag_table)


def _records(
    source: str,
    folder: str,
    rel: str,
    path: str,
    ext: str,
    captions: list[str],
    storage,
    options: ReadOptions,
    reported: set[str],
) -> Iterator[Record]:
    """The image's record, its tags from the first caption file of ``captions`` that may be read,
    and one reject row for each caption file that may not (each reported once: ``a.png`` and
    ``a.jpg`` share ``a.txt``)."""
    rec = Record(source, rel, path, ext=ext.lower(), tags={c: [] for c in TAG_CATEGORIES})
    for caption in captions:
        refused = metadata_refusal(caption, folder, storage)  # a link out of the folder, a FIFO: not opened
        if refused is None:
            try:
                rec.tags, rec.caption, rec.uncategorised_tags = read_sidecar(caption, storage, options)
                break
            except OSError as exc:  # unreadable, or swapped for a FIFO since the listing
                refused = Refused(f"{relpath(caption, folder)} cannot be read ({exc.strerror or exc})")
        if caption not in reported:
            reported.add(caption)
            yield Record(source, relpath(caption, folder), None, reject_reason=refused.reason,
                         reject_detail=f"caption file: {refused}"[:300])  # fmt: skip
    yield rec


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
        reported: set[str] = set()
        for name in sorted(files):
            stem, dot, ext = name.rpartition(".")
            if not dot or ext.lower() not in IMAGE_EXTS or name.startswith("."):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            captions = [os.path.join(root, stem + c) for c in options.captions if stem + c in present]
            yield from _records(source, folder, rel, path, ext, captions, None, options, reported)


def _iter_objects(
    source: str, folder: str, storage: SourceStorage | None, options: ReadOptions
) -> Iterator[Record]:
    """The same records for a folder on object storage: one listing, sidecars found in it."""
    files = walk_files(folder, storage)
    present = set(files)
    reported: set[str] = set()
    for path in sorted(files, key=lambda p: _walk_order(relpath(p, folder))):
        name = path.rpartition("/")[2]
        stem, dot, ext = name.rpartition(".")
        if not dot or ext.lower() not in IMAGE_EXTS:
            continue
        base = f"{path.rpartition('/')[0]}/{stem}"
        captions = [base + cap for cap in options.captions if base + cap in present]
        yield from _records(
            source, folder, relpath(path, folder), path, ext, captions, storage, options, reported
        )


def _walk_order(rel: str) -> tuple[tuple[int, str], ...]:
    """os.walk's order (a folder's files, then its sorted subfolders), so both give the same seq."""
    *dirs, name = rel.split("/")
    return (*((1, d) for d in dirs), (0, name))
