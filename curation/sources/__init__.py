"""Source readers: every dump format yields ``Record``s.

A source is given as ``[NAME=][KIND:]PATH``. Without a kind it is detected:
a ``.json``/``.jsonl`` file is Danbooru API posts (images beside it); a folder with
``original/`` or ``512px/`` is gwern's layout; a folder with top-level ``.json``/``.jsonl``
files is API posts with their images; any other folder is a plain image folder.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..records import Record, source_name_ok
from .danbooru_api import iter_api_posts
from .folder import iter_folder
from .gwern import iter_gwern, looks_like_gwern

KINDS = ("folder", "danbooru-api", "gwern")


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, unknown kind, bad name)."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    path: str
    images: str | None = None  # image folder for danbooru-api; default: beside the metadata

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {self.path})"


def _json_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*.json")) + glob.glob(os.path.join(folder, "*.jsonl")))


def detect_kind(path: str) -> str:
    if os.path.isfile(path):
        if path.lower().endswith((".json", ".jsonl")):
            return "danbooru-api"
        raise SourceError(f"source {path!r} is a file but not .json/.jsonl post metadata")
    if looks_like_gwern(path):
        return "gwern"
    if _json_files(path):
        return "danbooru-api"
    return "folder"


def _default_name(kind: str, path: str) -> str:
    if kind in ("danbooru-api", "gwern"):
        return "danbooru"
    slug = re.sub(r"[^a-z0-9-]+", "-", os.path.basename(os.path.normpath(path)).lower()).strip("-")
    return slug or "folder"


def parse_source(arg: str, images: str | None = None) -> SourceSpec:
    """``[NAME=][KIND:]PATH`` -> a checked SourceSpec (path must exist)."""
    name = None
    if "=" in arg and not os.path.exists(arg):
        name, arg = arg.split("=", 1)
    kind = None
    prefix, sep, rest = arg.partition(":")
    if sep and prefix in KINDS:
        kind, arg = prefix, rest
    path = os.path.abspath(os.path.expanduser(arg))
    if not os.path.exists(path):
        raise SourceError(f"source path does not exist: {arg}")
    kind = kind or detect_kind(path)
    name = name or _default_name(kind, path)
    if not source_name_ok(name):
        raise SourceError(f"source name {name!r} must be lowercase letters, digits and '-'")
    if images is not None:
        images = os.path.abspath(images)
        if not os.path.isdir(images):
            raise SourceError(f"image folder of source {name!r} does not exist: {images}")
    return SourceSpec(name, kind, path, images)


def check_unique_names(specs: list[SourceSpec]) -> None:
    seen: dict[str, SourceSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise SourceError(
                f"two sources are named {spec.name!r} ({seen[spec.name].path} and {spec.path}); "
                f"name them apart with NAME=PATH"
            )
        seen[spec.name] = spec


def iter_records(spec: SourceSpec) -> Iterator[Record]:
    """Every input of one source, in a stable order; repeated ids become ``duplicate_id`` rejects."""
    if spec.kind == "folder":
        inner = iter_folder(spec.name, spec.path)
    elif spec.kind == "gwern":
        inner = iter_gwern(spec.name, spec.path)
    elif spec.kind == "danbooru-api":
        if os.path.isfile(spec.path):
            files, folder = [spec.path], spec.images or os.path.dirname(spec.path)
        else:
            files, folder = _json_files(spec.path), spec.images or spec.path
        inner = iter_api_posts(spec.name, files, folder)
    else:
        raise SourceError(f"unknown source kind {spec.kind!r}; known: {', '.join(KINDS)}")
    seen: set[str] = set()
    for rec in inner:
        if rec.reject_reason is None:
            if rec.source_id in seen:
                rec.reject_reason = "duplicate_id"
                rec.reject_detail = f"{rec.source} id {rec.source_id} appears more than once"
            else:
                seen.add(rec.source_id)
        yield rec


__all__ = [
    "KINDS",
    "SourceError",
    "SourceSpec",
    "check_unique_names",
    "detect_kind",
    "iter_records",
    "parse_source",
]
