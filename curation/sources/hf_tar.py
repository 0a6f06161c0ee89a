"""HF-style dumps (danbooru2023 / danbooru2024): tar archives of ``{id}.{ext}`` plus parquet metadata.

Images are read in place from the tars (``tar://`` locations, see ``curation.decode``): nothing is
extracted, so a member named ``../x.jpg`` or a symlink member can never write or read outside the
archive; such members become ``unsafe_member`` rejects. Every parquet row and every tar member
becomes exactly one record:

* a row whose ``{id}.*`` member exists -> a record located in that member;
* a row without a member -> ``missing_file``; a member without a row -> ``no_metadata``;
* a second member with the same id (in another tar) -> ``duplicate_id``;
* a tar that cannot be read to its end -> one ``bad_archive`` record (its earlier members count).

Layout: ``PATH`` is a folder whose top-level ``*.parquet`` files are the metadata and whose
``*.tar`` files (any depth, e.g. ``images/0000.tar``) hold the images, or a single ``.parquet``
file with the tars below its folder. Directory members are structure, not inputs, and are skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from ..decode import tar_location as _tar_location
from ..records import Record
from ..storage import SourceStorage, dirname, is_remote, relpath, storage_or_default
from .common import is_file, leaves_root, metadata_refusal, record_from_post, walk_files

REQUIRED_COLUMNS = ("id",)
# Column names differ between scripts that write these dumps (FORMATS.md): map them onto the API's.
COLUMN_ALIASES = {"width": "image_width", "height": "image_height", "ext": "file_ext", "score_total": "score"}


class HfTarError(ValueError):
    """A dump that cannot be read at all (no parquet, a parquet without ids, unreadable parquet)."""


@dataclass(frozen=True)
class Member:
    tar: str  # absolute path or URL of the archive
    name: str  # member name as stored
    offset: int  # byte offset of the member's data in the archive
    size: int


def tar_location(member: Member) -> str:
    """``tar://<quoted archive path>#<offset>:<size>:<quoted member name>``."""
    return _tar_location(member.tar, member.offset, member.size, member.name)


def unsafe_reason(info: tarfile.TarInfo) -> str | None:
    """Why a member must not be read as an image (None when it is a plain, contained file)."""
    if info.issym() or info.islnk():
        return f"link member {info.name!r} -> {info.linkname!r}"
    if not info.isfile():
        return f"member {info.name!r} is not a regular file (type {info.type!r})"
    name = info.name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"absolute member path {info.name!r}"
    if ".." in name.split("/") or posixpath.normpath(name).startswith(".."):
        return f"member path {info.name!r} leaves the archive's folder"
    if any(ord(c) < 32 for c in name):
        return f"member path {info.name!r} has control characters"
    return None


def metadata_files(path: str, storage: SourceStorage | None = None) -> list[str]:
    if is_file(path, storage):
        return [path]
    if is_remote(path):
        found = storage_or_default(storage).files(path, recursive=False)
        return [p for p in found if p.endswith(".parquet")]
    return sorted(glob.glob(os.path.join(path, "*.parquet")))


def tar_files(folder: str, storage: SourceStorage | None = None) -> list[str]:
    """Every ``*.tar`` below ``folder``; folder links are not followed (no loops, see walk_files)."""
    if is_remote(folder):
        return [p for p in walk_files(folder, storage) if p.lower().endswith(".tar")]
    return [p for p in walk_files(folder) if p.lower().endswith(".tar") and os.path.isfile(p)]


def looks_like_hf_tar(path: str, storage: SourceStorage | None = None) -> bool:
    if is_file(path, storage):
        return path.lower().endswith(".parquet")
    return bool(metadata_files(path, storage)) and bool(tar_files(path, storage))


def _rows(
    path: str, storage: SourceStorage | None = None, batch_size: int = 4096
) -> Iterator[tuple[int, dict[str, Any]]]:
    refused = metadata_refusal(path, storage=storage)  # a link out of the dump, a FIFO: never opened
    if refused is not None:
        yield 0, refused
        return
    try:  # on a store, parquet reads its footer and row groups with ranged reads
        pf = pq.ParquetFile(storage_or_default(storage).open(path) if is_remote(path) else path)
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise HfTarError(f"cannot read parquet metadata {path}: {type(exc).__name__}: {exc}") from None
    names = pf.schema_arrow.names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise HfTarError(
            f"parquet {path} has no {', '.join(missing)!s} column; its columns: {', '.join(names[:30])}"
        )
    renames = {old: new for old, new in COLUMN_ALIASES.items() if old in names and new not in names}
    pos = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                for old, new in renames.items():
                    row[new] = row.pop(old)
                if isinstance(row.get("tags"), list) and all(isinstance(t, str) for t in row["tags"]):
                    row.setdefault(
                        "tag_string", " ".join(row.pop("tags"))
                    )  # a flat tag list, not gwern's dicts
                yield pos, row
                pos += 1
    except HfTarError:
        raise
    except Exception as exc:
        raise HfTarError(
            f"parquet {path} is unreadable after row {pos}: {type(exc).__name__}: {exc}"
        ) from None


@contextlib.contextmanager
def _open_tar(tar_path: str, storage: SourceStorage | None) -> Iterator[tuple[tarfile.TarFile, int]]:
    """The archive and its size. On a store only the headers are read (tarfile seeks past each
    member's data), as ranged reads; the members are read later by offset (curation.decode)."""
    if not is_remote(tar_path):
        with tarfile.open(tar_path, "r:") as tf:
            yield tf, os.path.getsize(tar_path)
        return
    store = storage_or_default(storage)
    size = store.size(tar_path)
    with store.open(tar_path) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
        yield tf, size


def index_tars(
    source: str, root: str, tars: list[str], storage: SourceStorage | None = None
) -> tuple[dict[str, Member], list[Record]]:
    """id -> its member, plus the records of members that cannot be used (unsafe, duplicate, bad tar)."""
    by_id: dict[str, Member] = {}
    problems: list[Record] = []
    for tar_path in tars:
        rel = relpath(tar_path, root)
        outside = leaves_root(root, tar_path)
        if outside:
            problems.append(Record(source, rel, None, reject_reason="outside_source", reject_detail=outside))
            continue
        try:
            with _open_tar(tar_path, storage) as (tf, archive_size):  # uncompressed: members read by offset
                for info in tf:
                    if info.isdir():
                        continue
                    where = f"{rel}:{info.name}"
                    reason = unsafe_reason(info)
                    if reason is not None:
                        problems.append(
                            Record(source, where, None, reject_reason="unsafe_member", reject_detail=reason)
                        )
                        continue
                    if info.offset_data + info.size > archive_size:
                        problems.append(Record(
                            source, where, None, reject_reason="bad_archive",
                            reject_detail=f"member {info.name!r} is cut off: the archive ends at byte {archive_size}",
                        ))  # fmt: skip
                        continue
                    stem, _, ext = posixpath.basename(info.name).rpartition(".")
                    where_tar = tar_path if is_remote(tar_path) else os.path.abspath(tar_path)
                    member = Member(where_tar, info.name, info.offset_data, info.size)
                    key = stem if stem.isdigit() else where
                    if key in by_id:
                        first = by_id[key]
                        problems.append(Record(
                            source, where, None, reject_reason="duplicate_id",
                            reject_detail=f"{rel}:{info.name} repeats id {key} of {first.tar.rpartition('/')[2]}:{first.name}",
                        ))  # fmt: skip
                        continue
                    by_id[key] = member
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(Record(source, rel, None, reject_reason="bad_archive",
                                   reject_detail=f"{type(exc).__name__}: {exc}"[:300]))  # fmt: skip
    return by_id, problems


def iter_hf_tar(
    source: str,
    path: str,
    images: str | None = None,
    era: str | None = "new",
    storage: SourceStorage | None = None,
) -> Iterator[Record]:
    """Every parquet row and every tar member of one dump, as records (see the module docstring)."""
    root = images or (dirname(path) if is_file(path, storage) else path)
    metas = metadata_files(path, storage)
    if not metas:
        raise HfTarError(f"no *.parquet metadata in {path}")
    by_id, problems = index_tars(source, root, tar_files(root, storage), storage)
    claimed: set[str] = set()
    for meta in metas:
        for pos, row in _rows(meta, storage):
            rec = record_from_post(source, row, f"{meta.rpartition('/')[2]}:{pos}", era=era)
            if rec.reject_reason is not None:
                if rec.post_id is not None and rec.source_id in by_id:
                    claimed.add(rec.source_id)  # the row's reject accounts for its member too
            else:
                member = by_id.get(rec.source_id)
                if member is None:
                    rec.reject_reason = "missing_file"
                    rec.reject_detail = f"no {rec.source_id}.* member in the tars below {root}"
                elif rec.source_id not in claimed:  # a repeated row id is flagged by iter_records
                    claimed.add(rec.source_id)
                    rec.location = tar_location(member)
                    rec.ext = member.name.rpartition(".")[2].lower() or rec.ext
            yield rec
    yield from problems
    for key, member in by_id.items():
        if key in claimed:
            continue
        rel = relpath(member.tar, root)
        source_id = key if key.isdigit() else f"{rel}:{member.name}"
        yield Record(source, source_id, None, ext=member.name.rpartition(".")[2].lower() or None,
                     reject_reason="no_metadata",
                     reject_detail=f"{rel}:{member.name} has no row in the parquet metadata")  # fmt: skip
