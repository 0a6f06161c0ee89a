"""A plain folder of images (recursive) with optional kohya-style ``.txt`` tag sidecars."""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..records import TAG_CATEGORIES, Record
from .common import IMAGE_EXTS, leaves_root

SIDECAR_MAX_BYTES = 1 << 20  # tags, not a novel: a larger (or sparse) .txt is read only this far


def read_sidecar(path: str) -> list[str]:
    """Comma-separated tags; a BOM is dropped and invalid UTF-8 is replaced, never fatal."""
    with open(path, "rb") as fh:
        raw = fh.read(SIDECAR_MAX_BYTES)
    text = raw.decode("utf-8-sig", errors="replace").replace("\ufffd", "")
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def iter_folder(source: str, folder: str) -> Iterator[Record]:
    for root, dirs, files in os.walk(folder):
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
