"""Source readers: every dump format yields ``Record``s.

A source is given as ``[NAME=][KIND:]PATH`` on the command line, or as a ``[[sources]]`` table
in the config (name, kind, path, images, share, era). Without a kind it is detected (``detect_kind``;
docs/sources.md lists every layout and the published dumps each kind reads):

* a file: ``.json``/``.jsonl`` -> danbooru-api; ``.parquet`` -> parquet-images when it holds image
  bytes, else hf-tar; a SQLite file -> sqlite; a DuckDB file -> duckdb; ``.tar``, ``.tar.gz``,
  ``.tgz``, ``.zip`` -> webdataset;
* a folder: a finished linepairs OUT -> linepairs; top-level parquet + archives below -> hf-tar;
  a top-level SQLite / DuckDB file -> sqlite / duckdb; parquet files with image bytes ->
  parquet-images; ``original/`` or ``512px/`` -> gwern; top-level post JSON -> danbooru-api;
  archives and no loose images -> webdataset; anything else -> folder.

Every reader's records pass, in ``iter_records``, the one tag hygiene (``curation.tags``), the
symlink policy and the repeated-id check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..records import Record
from ..storage import SourceStorage, dirname, is_remote, storage_or_default
from ..tags import TagProblem, clean_caption, clean_tags
from .archives import archives_below
from .common import MetadataRefused, is_file, leaves_root
from .danbooru_api import iter_api_posts
from .dump import Notes, ReadOptions, iter_joined, iter_webdataset, print_note
from .folder import iter_folder
from .gwern import iter_gwern
from .hf_tar import HfTarError, iter_hf_tar
from .linepairs_out import NotABuild, iter_linepairs
from .mapping import MappingError
from .parquet_images import iter_parquet_images
from .seen import SeenIds
from .spec import (
    DEFAULT_ERA,
    KINDS,
    METADATA_KINDS,
    SidecarConfig,
    SourceError,
    SourceSpec,
    _json_files,
    check_table,
    check_unique_names,
    database_file,
    detect_kind,
    is_remote_table,
    load_tag_table,
    parse_source,
    read_options,
    source_from_table,
    with_config,
    with_sidecars,
)
from .tables import TableError

# ---------------------------------------------------------------- records


def _raw_records(spec: SourceSpec, storage: SourceStorage, notes: Notes) -> tuple[Iterator[Record], str]:
    """The records of one source as its reader yields them, and the root its files must stay in."""
    era = spec.era or DEFAULT_ERA.get(spec.kind)
    options = read_options(spec)
    root = spec.path
    kind = spec.kind
    if kind == "folder":
        return iter_folder(spec.name, spec.path, storage, options), root
    if kind == "gwern":
        return iter_gwern(spec.name, spec.path, era, storage), root
    if kind == "hf-tar":  # checks its archives itself
        return iter_hf_tar(spec.name, spec.path, spec.images, era, storage, options, notes), root
    if kind == "danbooru-api":
        if is_file(spec.path, storage):
            files, root = [spec.path], spec.images or dirname(spec.path)
        else:
            files, root = _json_files(spec.path, storage), spec.images or spec.path
        return iter_api_posts(spec.name, files, root, era, storage), root
    if kind == "webdataset":
        if is_file(spec.path, storage):
            archives, root = [spec.path], dirname(spec.path)
        else:
            archives = archives_below(spec.path, storage)
        return iter_webdataset(
            spec.name, archives, root, era=era, options=options, storage=storage, notes=notes
        ), root
    if kind in ("sqlite", "duckdb"):
        return _iter_database(spec, era, options, storage, notes), root
    if kind == "parquet-images":
        return iter_parquet_images(spec.name, spec.path, era, storage, options, notes), root
    if kind == "linepairs":
        return iter_linepairs(spec.name, spec.path, storage, options, notes), root
    raise SourceError(f"unknown source kind {spec.kind!r}; known: {', '.join(KINDS)}")


def _iter_database(
    spec: SourceSpec, era: str | None, options: ReadOptions, storage: SourceStorage, notes: Notes
) -> Iterator[Record]:
    from .archives import collect
    from .database import DbSource

    path = database_file(spec)
    root = spec.images or os.path.dirname(path)
    try:
        db = DbSource(path, spec.kind)  # the file must stay in its folder (the source's, or its own)
    except MetadataRefused as exc:  # one reject row; the archives' members then have no metadata
        yield exc.record(spec.name, os.path.basename(path))
        db = None
    try:
        samples = collect(
            spec.name, archives_below(root, storage), root, storage, sidecars=options.sidecar_suffixes
        )
        parts = [(db.mapping, db.rows())] if db is not None else []
        yield from iter_joined(spec.name, parts, samples, era=era, root=root, options=options,
                               storage=storage, notes=notes)  # fmt: skip
    finally:
        if db is not None:
            db.close()


def check_metadata(
    specs: list[SourceSpec], filters: Any, predicted: bool, storage: SourceStorage | None = None
) -> None:
    """Before the scan: SourceError when a source's metadata maps nothing to a field the filters
    read (``curation.filters.needed_fields``; ``predicted``: a tagger fills tags and ratings)."""
    from ..filters import needed_fields
    from .needs import check_needs

    try:
        check_needs(specs, needed_fields(filters, predicted), storage)
    except (ValueError, OSError) as exc:
        raise SourceError(str(exc)) from None


def iter_records(
    spec: SourceSpec, storage: SourceStorage | None = None, notes: Notes | None = None
) -> Iterator[Record]:
    """Every input of one source, in a stable order; tags cleaned (``curation.tags``); repeated ids
    become ``duplicate_id`` rejects. ``notes`` gets the source's one-line notes (members skipped,
    a stale index), printed to stderr by default.

    A URL source is listed and read through ``storage`` (curation.storage)."""
    storage = storage_or_default(storage)
    notes = notes or print_note(f"source {spec.name}")
    try:
        inner, root = _raw_records(spec, storage, notes)
        yield from finish(inner, root)
    except (HfTarError, MappingError, TableError, NotABuild, MetadataRefused) as exc:
        raise SourceError(f"source {spec.name!r}: {exc}") from None


def finish(inner: Iterator[Record], root: str) -> Iterator[Record]:
    """What every reader's records go through: the symlink policy, the tag hygiene, repeated ids."""
    return _flag_repeats(_hygiene(_contained(inner, root)))


def _contained(inner: Iterator[Record], root: str) -> Iterator[Record]:
    """Symlink policy: an image whose links resolve outside the source folder is never read."""
    for rec in inner:
        loc = rec.location
        if rec.reject_reason is None and loc and "://" not in loc and not is_remote(root):
            outside = leaves_root(root, loc)
            if outside:
                rec.reject_reason, rec.reject_detail = "outside_source", outside
        yield rec


def _hygiene(inner: Iterator[Record]) -> Iterator[Record]:
    """The one tag hygiene for every reader: a tag that cannot be cleaned rejects its post."""
    for rec in inner:
        try:
            rec.tags = clean_tags(rec.tags)
        except TagProblem as problem:
            rec.tags = {c: [] for c in rec.tags}
            if rec.reject_reason is None:
                rec.reject_reason, rec.reject_detail = "bad_metadata", str(problem)[:300]
        rec.caption = clean_caption(rec.caption)
        yield rec


def _flag_repeats(inner: Iterator[Record]) -> Iterator[Record]:
    seen = SeenIds()  # bits for numeric ids: 10 million posts in ~1 MB
    for rec in inner:
        if rec.reject_reason is None:
            if rec.source_id in seen:
                rec.reject_reason = "duplicate_id"
                rec.reject_detail = f"{rec.source} id {rec.source_id} appears more than once"
            else:
                seen.add(rec.source_id)
        yield rec


__all__ = [
    "KINDS", "METADATA_KINDS", "SidecarConfig", "SourceError", "SourceSpec", "check_metadata", "check_table",
    "check_unique_names", "detect_kind", "is_remote_table", "iter_records", "load_tag_table", "parse_source",
    "read_options", "source_from_table", "with_config", "with_sidecars",
]  # fmt: skip
