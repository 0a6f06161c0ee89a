"""Danbooru API post JSON (a JSON array or JSON lines) next to a folder of images.

Images are found as ``{id}.{ext}`` or ``{md5}.{ext}`` anywhere below the image folder.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..records import Record
from .common import attach_image, index_images, iter_json_posts, record_from_post


def iter_api_posts(
    source: str, metadata_files: list[str], image_folder: str, era: str | None = None
) -> Iterator[Record]:
    images = index_images(image_folder)
    for meta in metadata_files:
        for pos, post in iter_json_posts(meta):
            rec = record_from_post(source, post, f"{meta}:{pos}", era=era)
            path = images.get(rec.source_id) or (images.get(rec.md5) if rec.md5 else None)
            yield attach_image(rec, path, f"no {rec.source_id}.* or {rec.md5}.* below {image_folder}")
