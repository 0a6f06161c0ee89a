"""The one record type every source yields, and the fixed vocabulary of reject reasons."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

TAG_CATEGORIES = ("general", "artist", "character", "copyright", "meta")

# stage -> reasons. Every reject row carries one of these; docs/rejects.md explains each.
REJECT_REASONS: dict[str, tuple[str, ...]] = {
    "metadata": (
        "bad_metadata",  # the record could not be parsed or lacks a usable id
        "duplicate_id",  # the same (source, id) was seen earlier in the dump
        "missing_file",  # metadata names a post whose image is not on disk
        "unsupported_format",  # video, ugoira, flash: not a still image
    ),
    "decode": (
        "empty_file",
        "decode_error",  # not an image, truncated, or corrupt
        "too_many_pixels",  # over the pixel-count bomb guard, checked before decoding
        "animated",  # more than one frame
        "too_small",  # shorter side under scan.min_side
        "aspect_out_of_range",  # long/short side over scan.max_aspect
    ),
    "pair": (
        "materialize_error",  # the image changed or vanished between scan and materialize
        # no line drawing passed pair quality (lineart/quality.py); detail names each extractor's problem
        "lines_empty",  # every drawing had next to no ink
        "lines_drowned",  # every drawing was mostly ink
        "lines_speckled",  # every drawing was mostly isolated specks
        "lines_unusable",  # every drawing failed, for different reasons
    ),
}


@dataclass
class Record:
    """A post or file from any source, before its pixels are read.

    ``location`` is a local path; ``source_id`` is the post id as text, or for a folder source
    the file's path relative to the folder.
    """

    source: str
    source_id: str
    location: str | None
    post_id: int | None = None
    md5: str | None = None
    ext: str | None = None
    width: int | None = None
    height: int | None = None
    rating: str | None = None
    tags: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in TAG_CATEGORIES})
    score: float | None = None
    fav_count: int | None = None
    is_deleted: bool | None = None
    reject_reason: str | None = None  # set by a source reader for metadata-level rejects
    reject_detail: str | None = None

    @property
    def key(self) -> str:
        return sample_key(self.source, self.source_id)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        tags = row.pop("tags")
        for cat in TAG_CATEGORIES:
            row[f"tags_{cat}"] = list(tags.get(cat, []))
        row["key"] = self.key
        return row


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(source: str, source_id: str) -> str:
    """WebDataset key ``{source}_{id}``: no dots (webdataset splits on the first dot).

    Numeric ids stay readable; anything else (paths) is sanitised and suffixed with a short
    hash of the original so that two paths that sanitise alike still get distinct keys.
    """
    if source_id.isdigit():
        return f"{source}_{source_id}"
    slug = _UNSAFE.sub("_", source_id).strip("_")[:60]
    digest = hashlib.sha1(source_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{source}_{slug}_{digest}"


def source_name_ok(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9-]*", name))
