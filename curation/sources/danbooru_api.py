"""Danbooru API post JSON (a JSON array or JSON lines) next to a folder of images.

Images are found as ``{id}.{ext}`` or ``{md5}.{ext}`` anywhere below the image folder; an image
that no post claims is reported as ``no_metadata`` (as hf-tar does), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..records import Record
from ..storage import SourceStorage, relpath
from .common import attach_image, index_images, iter_json_posts, record_from_post


def iter_api_posts(
    source: str,
    metadata_files: list[str],
    image_folder: str,
    era: str | None = None,
    storage: SourceStorage | None = None,
) -> Iterator[Record]:
    images = index_images(image_folder, storage)
    claimed: set[str] = set()
    for meta in metadata_files:
        for pos, post in iter_json_posts(meta, storage):
            rec = record_from_post(source, post, f"{meta}:{pos}", era=era)
            found = images.get(rec.source_id) or (images.get(rec.md5) if rec.md5 else None)
            path = found[0] if found and rec.reject_reason is None else None
            if found and (rec.reject_reason is None or rec.post_id is not None):
                claimed.add(found[0])  # a post's own reject accounts for its image too
            yield attach_image(rec, path, f"no {rec.source_id}.* or {rec.md5}.* below {image_folder}")
    for paths in images.values():
        for path in paths:
            if path not in claimed:
                rel = relpath(path, image_folder)
                yield Record(source, rel, None, ext=path.rpartition(".")[2].lower(), reject_reason="no_metadata",
                             reject_detail=f"{rel}: no post in the metadata names this image")  # fmt: skip
