"""Parquet files with the images inside (HF ``datasets`` Image columns: a struct ``{bytes, path}``,
or a plain binary column), read in place: the metadata columns by row group at enumeration, an
image's bytes only when the scan or materialize reads its location ``parquet://FILE#RG:ROW:COLUMN``
(one row group's image column per process, ``locations.py``), through the byte cap and then the
pixel bomb guard on the header before any pixel is decoded (``curation.decode``).

Layout: a ``.parquet`` file, or a folder of them (HF dataset repos keep them under ``data/``, any
depth). The other columns go through the Danbooru mapping; a row's id is the ``id`` column when
there is one, else its position (``FILE:ROW``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..records import Record
from ..storage import SourceStorage, is_remote, relpath
from .common import MetadataRefused, as_int, is_file, walk_files
from .dump import DEFAULT_OPTIONS, Notes, ReadOptions, _apply, record_from_fields
from .locations import parquet_location
from .mapping import Mapping, post_of, resolve
from .tables import ParquetTable, TableError

_BINARY_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")


def image_column(table: ParquetTable) -> str | None:
    """The column holding image bytes: the one HF ``datasets`` declares an ``Image`` feature, else
    a ``struct<bytes: binary, path: string>``, else a binary column with an image-like name."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"huggingface")
    if raw:
        try:
            features = json.loads(raw).get("info", {}).get("features", {})
            for name, feature in features.items():
                if (
                    isinstance(feature, dict)
                    and feature.get("_type") == "Image"
                    and name in table.schema.names
                ):
                    return name
        except (ValueError, AttributeError):
            pass
    for f in table.schema:
        t = str(f.type)
        if t.startswith("struct<") and "bytes: binary" in t:
            return f.name
    for f in table.schema:
        if str(f.type) in ("binary", "large_binary") and f.name.lower() in _BINARY_NAMES:
            return f.name
    return None


def parquet_files(path: str, storage: SourceStorage | None = None) -> list[str]:
    if is_file(path, storage):
        return [path]
    return [p for p in walk_files(path, storage) if p.lower().endswith(".parquet")]


def _root(path: str, storage: SourceStorage | None) -> str:
    return path if not is_file(path, storage) else path.rpartition("/")[0]


def looks_like_parquet_images(path: str, storage: SourceStorage | None = None) -> bool:
    """The first parquet file that may be opened has an image column."""
    root = _root(path, storage)
    for file in parquet_files(path, storage)[:16]:
        try:
            return image_column(ParquetTable(file, storage, root=root)) is not None
        except MetadataRefused:  # a link out, a FIFO: never opened, the next file says
            continue
        except TableError:  # not parquet (ParquetTable wraps every failure): the reading kind says so
            return False
    return False


def open_tables(
    path: str, storage: SourceStorage | None = None
) -> tuple[list[tuple[ParquetTable, str, Mapping]], list[MetadataRefused]]:
    """Every parquet file with its image column and mapping, and the files never opened (a link
    out of the source, a FIFO: each becomes one reject row)."""
    out, refused = [], []
    root = _root(path, storage)
    for file in parquet_files(path, storage):
        try:
            table = ParquetTable(
                file, storage, where=relpath(file, root) if root else file, root=root or None
            )
        except MetadataRefused as exc:
            refused.append(exc)
            continue
        column = image_column(table)
        if column is None:
            from .hf_tar import HfTarError

            raise HfTarError(
                f"parquet {file} has no image column (an HF Image struct or a binary 'image' column)"
            )
        out.append((table, column, resolve("danbooru", table.columns(skip=(column,)), table.where)))
    return out, refused


def iter_parquet_images(
    source: str,
    path: str,
    era: str | None = None,
    storage: SourceStorage | None = None,
    options: ReadOptions = DEFAULT_OPTIONS,
    notes: Notes | None = None,
) -> Iterator[Record]:
    tables, refused = open_tables(path, storage)
    root = _root(path, storage)
    for exc in refused:
        yield exc.record(source, relpath(exc.path, root) if root else exc.path)
    for table, column, mapping in tables:
        where_file = table.path if is_remote(table.path) else _abs(table.path)
        pos = 0
        for rg, rows in table.row_groups([c for c, _, _ in mapping.mapped]):
            for i, row in enumerate(rows):
                where = f"{table.where}:{pos}"
                pos += 1
                try:
                    post, tags, uncategorised = post_of(row, mapping, options.tag_table)
                except ValueError as exc:
                    yield Record(
                        source,
                        where,
                        None,
                        reject_reason="bad_metadata",
                        reject_detail=f"{where}: {exc}"[:300],
                    )
                    continue
                post_id = as_int(post.get("id"))
                source_id = str(post_id) if post_id is not None and post_id > 0 else where
                rec = record_from_fields(
                    source, source_id, post, where, era, rating_required=mapping.gives("rating")
                )
                _apply(rec, tags, post.get("caption"), uncategorised)
                if rec.reject_reason is None:
                    rec.location = parquet_location(where_file, rg, i, column)
                yield rec


def _abs(path: str) -> str:
    import os

    return os.path.abspath(path)


__all__ = ["image_column", "iter_parquet_images", "looks_like_parquet_images", "open_tables", "parquet_files"]
