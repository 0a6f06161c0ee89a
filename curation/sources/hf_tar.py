"""HF-style dumps (danbooru2023 / danbooru2024): archives of ``{id}.{ext}`` plus parquet metadata.

Layout: ``PATH`` is a folder whose top-level ``*.parquet`` files are the metadata and whose archives
(``.tar``, ``.tar.gz``/``.tgz``, ``.zip``, any depth, e.g. ``images/0000.tar``) hold the images,
or a single ``.parquet`` file with the archives below its folder. Images are read in place
(``archives.py``); rows and members meet on the post id, sidecar members fill what a row lacks, and
every row and member is accounted for (``dump.py``). Columns are read through the Danbooru mapping
(``mapping.py``): a tag string is split, a tag list is a list, a column of another shape is refused.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

from ..records import Record
from ..storage import SourceStorage, dirname, is_remote, storage_or_default
from .archives import archives_below, collect
from .common import MetadataRefused, is_file
from .dump import DEFAULT_OPTIONS, Notes, ReadOptions, iter_joined
from .mapping import Mapping, resolve
from .tables import ParquetTable


class HfTarError(ValueError):
    """A dump that cannot be read at all (no parquet, a parquet without ids, unreadable parquet)."""


def metadata_files(path: str, storage: SourceStorage | None = None) -> list[str]:
    if is_file(path, storage):
        return [path]
    if is_remote(path):
        found = storage_or_default(storage).files(path, recursive=False)
        return [p for p in found if p.endswith(".parquet")]
    return sorted(glob.glob(os.path.join(path, "*.parquet")))


def tar_files(folder: str, storage: SourceStorage | None = None) -> list[str]:
    """Every archive below ``folder``; folder links are not followed (no loops, see walk_files)."""
    return archives_below(folder, storage)


def looks_like_hf_tar(path: str, storage: SourceStorage | None = None) -> bool:
    if is_file(path, storage):
        return path.lower().endswith(".parquet")
    return bool(metadata_files(path, storage)) and bool(tar_files(path, storage))


def image_root(path: str, images: str | None, storage: SourceStorage | None) -> str:
    return images or (dirname(path) if is_file(path, storage) else path)


def open_tables(
    path: str, storage: SourceStorage | None = None
) -> tuple[list[tuple[ParquetTable, Mapping]], list[MetadataRefused]]:
    """Every metadata parquet of the dump with its mapping (MappingError for a column of the wrong
    shape, HfTarError for a parquet without ids), and the parquet files that are never opened (a
    link out of the dump, a FIFO: each becomes one reject row)."""
    metas = metadata_files(path, storage)
    if not metas:
        raise HfTarError(f"no *.parquet metadata in {path}")
    root = path if not is_file(path, storage) else dirname(path)
    out, refused = [], []
    for meta in metas:
        try:
            table = ParquetTable(meta, storage, root=root)
        except MetadataRefused as exc:
            refused.append(exc)
            continue
        mapping = resolve("danbooru", table.columns(), table.where)
        if not mapping.gives("id"):
            names = [c.name for c in table.columns()]
            raise HfTarError(f"parquet {meta} has no id column; its columns: {', '.join(names[:30])}")
        out.append((table, mapping))
    return out, refused


def iter_hf_tar(
    source: str,
    path: str,
    images: str | None = None,
    era: str | None = "new",
    storage: SourceStorage | None = None,
    options: ReadOptions = DEFAULT_OPTIONS,
    notes: Notes | None = None,
) -> Iterator[Record]:
    """Every parquet row and every archive member of one dump, as records."""
    root = image_root(path, images, storage)
    tables, refused = open_tables(path, storage)
    for exc in refused:  # its posts are not read: their members become no_metadata rows
        yield exc.record(source, exc.path.rpartition("/")[2])
    samples = collect(source, tar_files(root, storage), root, storage, sidecars=options.sidecar_suffixes)
    parts = [(mapping, _rows(table, mapping)) for table, mapping in tables]
    yield from iter_joined(
        source, parts, samples, era=era, root=root, options=options, storage=storage, notes=notes
    )


def _rows(table: ParquetTable, mapping: Mapping) -> Iterator[tuple[str, dict]]:
    for pos, row in enumerate(table.rows([c for c, _, _ in mapping.mapped])):
        yield f"{table.where}:{pos}", row


__all__ = [
    "HfTarError",
    "image_root",
    "iter_hf_tar",
    "looks_like_hf_tar",
    "metadata_files",
    "open_tables",
    "tar_files",
]
