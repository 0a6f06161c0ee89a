"""Source readers: every dump format yields ``Record``s.

A source is given as ``[NAME=][KIND:]PATH`` on the command line, or as a ``[[sources]]`` table
in the config (name, kind, path, images, share, era). Without a kind it is detected: a
``.json``/``.jsonl`` file is Danbooru API posts (images beside it); a ``.parquet`` file, or a
folder with top-level ``.parquet`` files and ``.tar`` files below, is an HF-style tar dump; a folder
with ``original/`` or ``512px/`` is gwern's layout; a folder with top-level ``.json``/``.jsonl``
files is API posts with their images; any other folder is a plain image folder.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..records import Record, source_name_ok
from ..storage import SourceStorage, dirname, is_remote, local_path, storage_or_default
from .common import is_file, leaves_root
from .danbooru_api import iter_api_posts
from .folder import iter_folder
from .gwern import iter_gwern, looks_like_gwern
from .hf_tar import HfTarError, iter_hf_tar, looks_like_hf_tar

KINDS = ("folder", "danbooru-api", "gwern", "hf-tar")
ERAS = ("old", "new")
# Rating era each kind implies when neither the config nor the record says: gwern's dumps end in
# 2021 (old letters), the HF parquet dumps are 2023+ (new letters); API records date themselves.
DEFAULT_ERA = {"gwern": "old", "hf-tar": "new"}
SOURCE_KEYS = ("name", "kind", "path", "images", "share", "era")


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, unknown kind, bad name)."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    path: str
    images: str | None = (
        None  # image folder (danbooru-api) or tar folder (hf-tar); default: beside the metadata
    )
    share: float | None = None  # target share of training draws (the weights use it); None: no target
    era: str | None = None  # rating era "old" / "new"; None: the kind's default, else per record

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {self.path})"


def _json_files(folder: str, storage: SourceStorage | None = None) -> list[str]:
    if is_remote(folder):
        found = storage_or_default(storage).files(folder, recursive=False)
        return [p for p in found if p.lower().endswith((".json", ".jsonl"))]
    return sorted(glob.glob(os.path.join(folder, "*.json")) + glob.glob(os.path.join(folder, "*.jsonl")))


def detect_kind(path: str, storage: SourceStorage | None = None) -> str:
    remote = is_remote(path)
    if storage_or_default(storage).isfile(path) if remote else os.path.isfile(path):
        if path.lower().endswith((".json", ".jsonl")):
            return "danbooru-api"
        if path.lower().endswith(".parquet"):
            return "hf-tar"
        raise SourceError(f"source {path!r} is a file but not .json/.jsonl/.parquet post metadata")
    if looks_like_hf_tar(path, storage):
        return "hf-tar"
    if looks_like_gwern(path, storage):
        return "gwern"
    if _json_files(path, storage):
        return "danbooru-api"
    return "folder"


def _default_name(kind: str, path: str) -> str:
    if kind in ("danbooru-api", "gwern", "hf-tar"):
        return "danbooru"
    base = (
        path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(os.path.normpath(path))
    )
    slug = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    return slug or "folder"


def _where(path: str) -> str:
    """A local path made absolute; a URL (``s3://bucket/dump``) as given, without a trailing ``/``."""
    path = local_path(path)
    return path.rstrip("/") if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def _exists(path: str, storage: SourceStorage | None, folder: bool = False) -> bool:
    if not is_remote(path):
        return os.path.isdir(path) if folder else os.path.exists(path)
    try:
        store = storage_or_default(storage)
        return store.isdir(path) if folder else (store.isfile(path) or store.isdir(path))
    except OSError as exc:  # no credentials, unreachable endpoint: one line, never the secret
        raise SourceError(f"cannot reach source {path}: {str(exc).strip().splitlines()[0][:300]}") from None


def parse_source(
    arg: str,
    images: str | None = None,
    *,
    share: float | None = None,
    era: str | None = None,
    storage: SourceStorage | None = None,
) -> SourceSpec:
    """``[NAME=][KIND:]PATH`` -> a checked SourceSpec (path must exist); PATH may be a URL (``s3://``)."""
    name = None
    if "=" in arg and not os.path.exists(arg) and not is_remote(arg):
        name, arg = arg.split("=", 1)
    kind = None
    prefix, sep, rest = arg.partition(":")
    if sep and prefix in KINDS:
        kind, arg = prefix, rest
    path = _where(arg)
    if not _exists(path, storage):
        raise SourceError(f"source path does not exist: {arg}")
    kind = kind or detect_kind(path, storage)
    name = name or _default_name(kind, path)
    if not source_name_ok(name):
        raise SourceError(f"source name {name!r} must be lowercase letters, digits and '-'")
    if images is not None:
        images = _where(images)
        if not _exists(images, storage, folder=True):
            raise SourceError(f"image folder of source {name!r} does not exist: {images}")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1
    ):
        raise SourceError(f"share of source {name!r} must be a number in (0, 1], got {share!r}")
    if era is not None and era not in ERAS:
        raise SourceError(f"era of source {name!r} must be one of {', '.join(ERAS)}, got {era!r}")
    return SourceSpec(name, kind, path, images, float(share) if share is not None else None, era)


def source_from_table(
    table: dict, base_dir: str | None = None, storage: SourceStorage | None = None
) -> SourceSpec:
    """One ``[[sources]]`` config table (keys: SOURCE_KEYS; path relative to the config's folder)."""
    check_table(table)

    def resolve(p: str) -> str:
        if "://" in p:
            return p
        p = os.path.expanduser(p)
        return p if os.path.isabs(p) or base_dir is None else os.path.join(base_dir, p)

    kind = table.get("kind")
    arg = (f"{kind}:" if kind else "") + resolve(table["path"])
    if "name" in table:
        arg = f"{table['name']}={arg}"
    images = resolve(table["images"]) if "images" in table else None
    return parse_source(arg, images, share=table.get("share"), era=table.get("era"), storage=storage)


def is_remote_table(table: Any) -> bool:
    """A ``[[sources]]`` table whose path or images is a URL: opened only where the command's
    ``--storage-option`` settings are known, never at config load."""
    return isinstance(table, dict) and any("://" in str(table.get(k) or "") for k in ("path", "images"))


def check_table(table: Any) -> None:
    """The shape of a ``[[sources]]`` table (keys, types, kind), without opening anything."""
    if not isinstance(table, dict):
        raise SourceError(f"[[sources]] entries must be tables, got {type(table).__name__}")
    unknown = sorted(set(table) - set(SOURCE_KEYS))
    if unknown:
        raise SourceError(
            f"[[sources]] has unknown key(s) {', '.join(unknown)}; known: {', '.join(SOURCE_KEYS)}"
        )
    for key in ("name", "kind", "path", "images", "era"):
        if key in table and not isinstance(table[key], str):
            raise SourceError(f"[[sources]] {key} must be a string, got {table[key]!r}")
    if "path" not in table:
        raise SourceError("[[sources]] entry needs a 'path'")
    kind = table.get("kind")
    if kind is not None and kind not in KINDS:
        raise SourceError(f"[[sources]] kind {kind!r} is unknown; known: {', '.join(KINDS)}")


def check_unique_names(specs: list[SourceSpec]) -> None:
    seen: dict[str, SourceSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise SourceError(
                f"two sources are named {spec.name!r} ({seen[spec.name].path} and {spec.path}); "
                f"name them apart with NAME=PATH"
            )
        seen[spec.name] = spec


def iter_records(spec: SourceSpec, storage: SourceStorage | None = None) -> Iterator[Record]:
    """Every input of one source, in a stable order; repeated ids become ``duplicate_id`` rejects.

    A URL source is listed and read through ``storage`` (curation.storage)."""
    storage = storage_or_default(storage)
    era = spec.era or DEFAULT_ERA.get(spec.kind)
    root = spec.path
    if spec.kind == "folder":
        inner = iter_folder(spec.name, spec.path, storage)
    elif spec.kind == "gwern":
        inner = iter_gwern(spec.name, spec.path, era, storage)
    elif spec.kind == "hf-tar":
        inner = iter_hf_tar(spec.name, spec.path, spec.images, era, storage)  # checks its tars itself
    elif spec.kind == "danbooru-api":
        if is_file(spec.path, storage):
            files, root = [spec.path], spec.images or dirname(spec.path)
        else:
            files, root = _json_files(spec.path, storage), spec.images or spec.path
        inner = iter_api_posts(spec.name, files, root, era, storage)
    else:
        raise SourceError(f"unknown source kind {spec.kind!r}; known: {', '.join(KINDS)}")
    try:
        yield from _flag_repeats(_contained(inner, root))
    except HfTarError as exc:
        raise SourceError(f"source {spec.name!r}: {exc}") from None


def _contained(inner: Iterator[Record], root: str) -> Iterator[Record]:
    """Symlink policy: an image whose links resolve outside the source folder is never read."""
    for rec in inner:
        loc = rec.location
        if rec.reject_reason is None and loc and "://" not in loc and not is_remote(root):
            outside = leaves_root(root, loc)
            if outside:
                rec.reject_reason, rec.reject_detail = "outside_source", outside
        yield rec


def _flag_repeats(inner: Iterator[Record]) -> Iterator[Record]:
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
    "KINDS", "SourceError", "SourceSpec", "check_unique_names", "detect_kind", "iter_records", "parse_source",
    "source_from_table",
]  # fmt: skip
