"""What a source is: ``[NAME=][KIND:]PATH`` and ``[[sources]]`` tables parsed and checked, the kind
detected, and the files of a source that hold its metadata (JSON files, a database, tag tables).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from ..records import source_name_ok
from ..storage import SourceStorage, is_remote, local_path, storage_or_default
from ..tags import TagTable, TagTableError, read_tag_table
from .archives import archive_type
from .common import (
    IMAGE_EXTS,
    is_file,
    metadata_refusal,
    open_regular,
    walk_files,
    walk_tree,
)
from .dump import ReadOptions
from .gwern import looks_like_gwern
from .hf_tar import looks_like_hf_tar
from .linepairs_out import looks_like_linepairs
from .parquet_images import looks_like_parquet_images
from .tables import is_duckdb, is_sqlite

KINDS = (
    "folder",
    "danbooru-api",
    "gwern",
    "hf-tar",
    "webdataset",
    "sqlite",
    "duckdb",
    "parquet-images",
    "linepairs",
)
ERAS = ("old", "new")
# Rating era each kind implies when neither the config nor the record says: gwern's dumps end in
# 2021 (old letters), the HF parquet and database dumps are 2023+ (new letters); API records,
# sidecars and older builds date themselves.
DEFAULT_ERA = {"gwern": "old", "hf-tar": "new", "sqlite": "new", "duckdb": "new"}
SOURCE_KEYS = ("name", "kind", "path", "images", "share", "era")
DB_SUFFIXES = {"sqlite": (".db", ".sqlite", ".sqlite3"), "duckdb": (".duckdb", ".ddb")}
# kinds whose metadata are tables or post records: a field the filters need must map from something
METADATA_KINDS = ("danbooru-api", "gwern", "hf-tar", "sqlite", "duckdb", "parquet-images", "linepairs")


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, unknown kind, bad name, a mapping that
    cannot serve the filters)."""


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    path: str
    images: str | None = (
        None  # image folder (danbooru-api) or archive folder (hf-tar, sqlite, duckdb); default: beside the metadata
    )
    share: float | None = None  # target share of training draws (the weights use it); None: no target
    era: str | None = None  # rating era "old" / "new"; None: the kind's default, else per record
    # [sidecars] (docs/config.md): caption file extensions, and the tag table with its sha256 (a
    # changed table changes the records, so it is part of the build's identity)
    captions: tuple[str, ...] = (".txt", ".caption")
    tag_table: str | None = None
    tag_table_sha256: str | None = None

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {self.path})"


def _json_files(folder: str, storage: SourceStorage | None = None) -> list[str]:
    if is_remote(folder):
        found = storage_or_default(storage).files(folder, recursive=False)
        found = [p for p in found if p.lower().endswith((".json", ".jsonl"))]
    else:
        found = sorted(glob.glob(os.path.join(folder, "*.json")) + glob.glob(os.path.join(folder, "*.jsonl")))
    # an hfutils index (NNNN.json beside NNNN.tar) is not post metadata
    return [p for p in found if not (p.lower().endswith(".json") and _exists_file(p[:-5] + ".tar", storage))]


def _exists_file(path: str, storage: SourceStorage | None) -> bool:
    return is_file(path, storage)


def _db_files(folder: str, engine: str) -> list[str]:
    """The top-level databases of ``engine`` in ``folder``: by their first bytes, or by their name
    for a file the metadata-file policy refuses (a link out, a FIFO: never opened, not even to
    look; enumeration makes its reject row)."""
    if is_remote(folder) or not os.path.isdir(folder):
        return []
    test = is_sqlite if engine == "sqlite" else is_duckdb
    found = []
    for p in sorted(glob.glob(os.path.join(folder, "*"))):
        if os.path.isdir(p):
            continue
        if metadata_refusal(p, folder) is not None:
            if p.lower().endswith(DB_SUFFIXES[engine]):
                found.append(p)
        elif test(p):
            found.append(p)
    return found


def detect_kind(path: str, storage: SourceStorage | None = None) -> str:
    remote = is_remote(path)
    lower = path.lower()
    if storage_or_default(storage).isfile(path) if remote else os.path.isfile(path):
        if lower.endswith((".json", ".jsonl")):
            return "danbooru-api"
        if lower.endswith(".parquet"):
            return "parquet-images" if looks_like_parquet_images(path, storage) else "hf-tar"
        if archive_type(path):
            return "webdataset"
        if not remote and is_sqlite(path):
            return "sqlite"
        if not remote and is_duckdb(path):
            return "duckdb"
        raise SourceError(
            f"source {path!r} is a file but not .json/.jsonl/.parquet post metadata, a SQLite or DuckDB "
            f"database, or a .tar/.tar.gz/.tgz/.zip archive"
        )
    if looks_like_linepairs(path, storage):
        return "linepairs"
    if looks_like_hf_tar(path, storage):
        return "hf-tar"
    for engine in ("sqlite", "duckdb"):
        if _db_files(path, engine):
            return engine
    if looks_like_gwern(path, storage):
        return "gwern"
    if _json_files(path, storage):
        return "danbooru-api"
    archives = parquet = False
    for p in _files_lazily(path, storage):  # the first loose image decides: a folder
        if p.rpartition(".")[2].lower() in IMAGE_EXTS:
            return "folder"
        archives = archives or bool(archive_type(p))
        parquet = parquet or p.lower().endswith(".parquet")
    if archives:
        return "webdataset"
    if parquet and looks_like_parquet_images(path, storage):
        return "parquet-images"
    return "folder"


def _files_lazily(path: str, storage: SourceStorage | None) -> Iterator[str]:
    """The files below a folder, lazily on a disk (detection stops at the first image of a big
    folder), from one listing on a store; hidden names and folder links skipped as walk_files does."""
    if is_remote(path):
        yield from walk_files(path, storage)
        return
    for root, dirs, files in walk_tree(path):  # os.walk without recursion (deep chains)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (os.path.join(root, n) for n in sorted(files) if not n.startswith("."))


def _default_name(kind: str, path: str) -> str:
    if kind in ("danbooru-api", "gwern", "hf-tar", "sqlite", "duckdb"):
        return "danbooru"
    base = (
        path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(os.path.normpath(path))
    )
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".parquet"):
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
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


_KIND_LIKE = re.compile(r"[a-z][a-z0-9-]+")


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
    elif sep and _KIND_LIKE.fullmatch(prefix) and not rest.startswith("//") and not os.path.exists(arg):
        raise SourceError(f"unknown source kind {prefix!r} in {arg!r}; known: {', '.join(KINDS)}")
    path = _where(arg)
    if not _exists(path, storage):
        raise SourceError(f"source path does not exist: {arg}")
    if not is_remote(path) and not (os.path.isdir(path) or os.path.isfile(path)):
        # a FIFO would block the first read of it, a device would be read without end
        raise SourceError(
            f"source path is neither a regular file nor a folder (a FIFO, device or socket): {arg}"
        )
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


# ---------------------------------------------------------------- sidecar settings


@dataclass(frozen=True)
class SidecarConfig:
    """``[sidecars]``: how caption files beside images (folders, archives) are read."""

    caption_extensions: tuple[str, ...] = (".txt", ".caption")  # in order of preference (kohya: .caption)
    tag_table: str = ""  # a Danbooru tags export or a tagger's selected_tags.csv; "": none

    def check(self) -> None:
        if not self.caption_extensions:
            raise ValueError("sidecars.caption_extensions must name at least one extension (e.g. .txt)")
        for ext in self.caption_extensions:
            bare = ext.lower().lstrip(".")
            if not ext.startswith(".") or not re.fullmatch(r"[a-z0-9_-]+", bare):
                raise ValueError(f"sidecars.caption_extensions: {ext!r} is not an extension like '.txt'")
            if bare in IMAGE_EXTS or bare in ("json", "tags"):
                raise ValueError(f"sidecars.caption_extensions: {ext!r} is an image or metadata extension")


def with_sidecars(spec: SourceSpec, captions: tuple[str, ...], tag_table: str | None) -> SourceSpec:
    """The spec with the build's ``[sidecars]`` settings (the tag table's sha256 included)."""
    digest = None
    if tag_table:
        load_tag_table(tag_table)  # refuse an unreadable table before anything starts
        digest = _sha256(tag_table)
    return replace(spec, captions=tuple(captions), tag_table=tag_table or None, tag_table_sha256=digest)


def with_config(spec: SourceSpec, config: Any) -> SourceSpec:
    """The spec with a build config's ``[sidecars]`` (``pipelines.config.BuildConfig``)."""
    return with_sidecars(spec, config.sidecars.caption_extensions, config.sidecars.tag_table or None)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=2)
def _cached_table(path: str, mtime: float, size: int) -> TagTable:
    return read_tag_table(path)


def load_tag_table(path: str) -> TagTable:
    """A tag table, read once per file version (enumeration and inspect share it)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SourceError(f"tag table {path}: {exc.strerror or exc}") from None
    try:
        return _cached_table(path, st.st_mtime, st.st_size)
    except TagTableError as exc:
        raise SourceError(str(exc)) from None


def read_options(spec: SourceSpec) -> ReadOptions:
    return ReadOptions(spec.captions, load_tag_table(spec.tag_table) if spec.tag_table else None)


def database_file(spec: SourceSpec) -> str:
    if not os.path.isdir(spec.path):  # the file named (parse_source: a regular file, or a link to one)
        return spec.path
    found = _db_files(spec.path, spec.kind)
    if len(found) != 1:
        raise SourceError(
            f"source {spec.describe()}: expected one {spec.kind} database in the folder, found "
            f"{len(found)}{': ' + ', '.join(os.path.basename(p) for p in found) if found else ''}; give the file"
        )
    return found[0]
