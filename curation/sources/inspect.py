"""What ``linepairs inspect`` shows of a source: its detected kind, files and row counts, the mapping
actually used (mapped, unmapped and missing columns), whether its metadata serves the filters, the
first N records as the filters see them and the verdict each would get in the scan.

It reads only what it shows: table footers and schemas, the first N rows, and for dumps of a table
plus archives only the archives that hold those rows' images (at most ``max_archives``; hfutils
indexes make that one small read each), never the whole dump. Verdicts are the scan's own
(``curation.scan.scan_row``: metadata filters, read, decode, size rules, pixel metrics) without the
per-source percentile cuts, which need every record of the source, and without the plan's dedup.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..records import TAG_CATEGORIES, Record
from ..storage import SourceStorage, dirname, is_remote, relpath, storage_or_default
from .archives import Samples, archives_below, collect, stray_line
from .common import MetadataRefused, is_file, walk_files
from .dump import iter_joined
from .mapping import Mapping, MappingError
from .tables import TableError

MAX_ARCHIVES = 4


@dataclass
class Inspection:
    name: str
    kind: str
    path: str
    files: list[dict[str, Any]] = field(default_factory=list)
    mappings: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None  # why the build would refuse this source (before the scan)
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "path": self.path, "files": self.files,
            "mappings": self.mappings, "refused": self.refused, "records": self.records, "notes": self.notes,
        }  # fmt: skip


def _size(path: str) -> int | None:
    return None if is_remote(path) else os.path.getsize(path)


def _archives_entry(archives: list[str], root: str) -> dict[str, Any]:
    sizes = [_size(a) for a in archives]
    entry: dict[str, Any] = {"what": "archives", "count": len(archives)}
    if archives:
        entry["first"] = relpath(archives[0], root)
        entry["last"] = relpath(archives[-1], root)
    if archives and all(s is not None for s in sizes):
        entry["bytes"] = int(sum(sizes))  # type: ignore[arg-type]
    return entry


def _id_column(mapping: Mapping) -> str | None:
    return next((c for c, f, _ in mapping.mapped if f == "id"), None)


def _peek_joined(
    spec, storage: SourceStorage, tables: list[tuple[Mapping, Iterator[tuple[str, dict]]]], archives: list[str],
    root: str, limit: int, max_archives: int, *, by: str = "id", first: list[str] | None = None,
    unrated_ok: bool = False,
) -> tuple[list[Record], list[str]]:  # fmt: skip
    """The first ``limit`` rows joined to the members of at most ``max_archives`` archives."""
    from . import read_options

    options = read_options(spec)
    picked: list[tuple[Mapping, str, dict]] = []
    for mapping, rows in tables:
        for where, row in rows:
            if len(picked) >= limit:
                break
            picked.append((mapping, where, row))
    wanted = set()
    for mapping, _, row in picked:
        if by == "key":
            wanted.add(str(row.get("key")))
        else:
            col = _id_column(mapping)
            value = row.get(col) if col else None
            wanted.add(str(value).strip() if value is not None else "")
    order = [a for a in (first or []) if a in set(archives)] + [
        a for a in archives if a not in set(first or [])
    ]
    samples, strays, read = Samples(), Counter(), 0
    for archive in order:
        if read >= max_archives or wanted <= set(samples.by_key):
            break
        part = collect(spec.name, [archive], root, storage, by=by, sidecars=options.sidecar_suffixes)
        read += 1
        for key in wanted & set(part.by_key):
            samples.by_key.setdefault(key, part.by_key[key])
        samples.notes += part.notes
        strays.update(part.strays)
    if by == "key":
        for sample in samples.by_key.values():
            sample.sidecars = {}
    distinct = list({id(m): m for m, _, _ in picked}.values())
    groups = [(m, iter([(w, r) for mm, w, r in picked if mm is m])) for m in distinct]
    from . import finish

    joined = iter_joined(spec.name, groups, samples, era=_era(spec), root=root, options=options, storage=storage,
                         by=by, unrated_ok=unrated_ok)  # fmt: skip
    records = list(itertools.islice(finish(joined, root), len(picked)))
    notes = list(samples.notes) + ([stray_line(strays)] if strays else [])
    if read < len(archives):
        unread = len(archives) - read
        for rec in records:
            if rec.reject_reason == "missing_file":
                rec.reject_detail = (
                    f"not in the {read} archive(s) read of {len(archives)}: inspect stops there; the build reads "
                    f"all {len(archives)} ({unread} unread)"
                )
    return records, notes


def _era(spec) -> str | None:
    from . import DEFAULT_ERA

    return spec.era or DEFAULT_ERA.get(spec.kind)


def _files_and_records(
    spec, storage: SourceStorage, limit: int, max_archives: int, out: Inspection
) -> list[Record]:
    """The files, mappings and first records of one source, by kind."""
    from . import _json_files, database_file, iter_records

    kind = spec.kind
    if kind == "hf-tar":
        from .hf_tar import image_root, open_tables

        tables, refused = open_tables(spec.path, storage)
        root = image_root(spec.path, spec.images, storage)
        archives = archives_below(root, storage)
        out.files = [{"what": "metadata", "path": t.where, "rows": t.count()} for t, _ in tables]
        out.files += _refused_entries(refused, out)
        out.files.append(_archives_entry(archives, root))
        out.mappings = [m.describe() for _, m in tables]
        parts = [
            (
                m,
                (
                    (f"{t.where}:{i}", r)
                    for i, r in enumerate(t.rows([c for c, _, _ in m.mapped], batch_size=max(limit, 1)))
                ),
            )
            for t, m in tables
        ]
        records, notes = _peek_joined(spec, storage, parts, archives, root, limit, max_archives)
        out.notes += notes
        return records
    if kind in ("sqlite", "duckdb"):
        from .database import DbSource

        path = database_file(spec)
        try:
            db = DbSource(path, kind)
        except MetadataRefused as exc:
            out.files = _refused_entries([exc], out)
            return []
        try:
            root = spec.images or os.path.dirname(path)
            archives = archives_below(root, storage)
            out.files = [{"what": "metadata", "path": os.path.basename(path), "table": db.table, "rows": db.count(),
                          "tags": db.tag_mode or "columns"}, _archives_entry(archives, root)]  # fmt: skip
            rows = db.rows(limit=limit)
            out.mappings = [db.mapping.describe()]
            records, notes = _peek_joined(
                spec, storage, [(db.mapping, rows)], archives, root, limit, max_archives
            )
        finally:
            db.close()
        out.notes += notes
        return records
    if kind == "linepairs":
        from .linepairs_out import open_manifest, shard_files

        try:
            table, mapping = open_manifest(spec.path, storage)
        except MetadataRefused as exc:
            out.files = _refused_entries([exc], out)
            return []
        shards = shard_files(spec.path, storage)
        out.files = [
            {"what": "metadata", "path": table.where, "rows": table.count()},
            _archives_entry(shards, spec.path),
        ]
        out.mappings = [mapping.describe()]
        cols = [c for c, _, _ in mapping.mapped] + (["shard"] if "shard" in table.schema.names else [])
        rows = list(itertools.islice(table.rows(cols, batch_size=max(limit, 1)), limit))
        first = [
            os.path.join(spec.path, r["shard"]) if not is_remote(spec.path) else f"{spec.path}/{r['shard']}"
            for r in rows
            if r.get("shard")
        ]
        parts = [(mapping, ((f"{table.where}:{i}", r) for i, r in enumerate(rows)))]
        records, notes = _peek_joined(spec, storage, parts, shards, spec.path, limit, max_archives, by="key",
                                      first=list(dict.fromkeys(first)), unrated_ok=True)  # fmt: skip
        out.notes += notes
        return records
    if kind == "parquet-images":
        from .parquet_images import open_tables

        tables, refused = open_tables(spec.path, storage)
        out.files = [
            {"what": "metadata+images", "path": t.where, "rows": t.count(), "image_column": col}
            for t, col, _ in tables
        ] + _refused_entries(refused, out)
        out.mappings = [m.describe() for _, _, m in tables]
    if kind in ("folder", "webdataset"):
        out.mappings = [_sidecar_mapping(spec)]
    if kind == "folder":
        files = walk_files(spec.path, storage)
        from . import read_options
        from .common import IMAGE_EXTS

        caps = {"." + s for s in read_options(spec).caption_suffixes}
        out.files = [
            {"what": "images", "count": sum(p.rpartition(".")[2].lower() in IMAGE_EXTS for p in files)},
            {"what": "caption files", "count": sum(any(p.lower().endswith(c) for c in caps) for p in files)},
        ]
    elif kind == "webdataset":
        archives = [spec.path] if is_file(spec.path, storage) else archives_below(spec.path, storage)
        root = dirname(spec.path) if is_file(spec.path, storage) else spec.path
        out.files = [_archives_entry(archives, root)]
    elif kind in ("danbooru-api", "gwern"):
        from .gwern import metadata_files
        from .needs import metadata_gives

        metas = metadata_files(spec.path, storage) if kind == "gwern" else (
            [spec.path] if is_file(spec.path, storage) else _json_files(spec.path, storage))  # fmt: skip
        out.files = [
            {"what": "metadata", "count": len(metas), "first": metas[0].rpartition("/")[2] if metas else None}
        ]
        gives = metadata_gives(spec, storage)
        out.mappings = [{"kind": "danbooru", "where": gives.where, "mapped": [
            {"column": k, "field": k, "how": "as the Danbooru API"} for k in gives.columns], "unmapped": [], "missing": []}]  # fmt: skip
    notes: list[str] = []
    records = list(itertools.islice(iter_records(spec, storage, notes=notes.append), limit))
    out.notes += notes
    return records


def _refused_entries(refused: list[MetadataRefused], out: Inspection) -> list[dict[str, Any]]:
    """Metadata files the policy never opens (a link out of the source, a FIFO), as the files list
    shows them, each with a note: the build gives each one reject row."""
    entries = []
    for exc in refused:
        name = exc.path.rpartition("/")[2]
        entries.append({"what": "metadata", "path": name, "refused": exc.reason})
        out.notes.append(f"{name} is not read ({exc.reason}): {exc}; the build gives it one reject row")
    return entries


def _sidecar_mapping(spec) -> dict[str, Any]:
    """What a folder's or an archive's sidecars map to (docs/sources.md, "Archives", "Folder captions")."""
    from . import read_options

    options = read_options(spec)
    table = (
        f"; categories from {os.path.basename(spec.tag_table)}"
        if spec.tag_table
        else "; all general (no tag table)"
    )
    mapped = [{"column": f"NAME{ext}", "field": "tags, caption", "how": f"tags, then prose verbatim{table}"}
              for ext in options.captions]  # fmt: skip
    if spec.kind == "webdataset":
        mapped = [{"column": "KEY.json", "field": "post fields, tags", "how": "Danbooru post / linepairs sample JSON"},
                  *mapped, {"column": "KEY.tags", "field": "tags", "how": f"a tag per line or comma{table}"}]  # fmt: skip
    return {"kind": "sidecars", "where": "beside each image", "mapped": mapped, "unmapped": [], "missing": []}


def _location(rec: Record, root: str) -> str:
    loc = rec.location or ""
    if loc.startswith(("tar://", "tgz://", "zip://", "parquet://")):
        from urllib.parse import unquote

        scheme, _, body = loc.partition("://")
        path, _, frag = body.partition("#")
        member = unquote(frag.rsplit(":", 1)[-1])
        return f"{relpath(unquote(path), root)}:{member}"
    return relpath(loc, root) if loc else ""


def inspect_source(spec, config: Any, storage: SourceStorage | None = None, limit: int = 5,
                   max_archives: int = MAX_ARCHIVES, pixels: bool = True) -> Inspection:  # fmt: skip
    """Everything ``linepairs inspect`` shows of one source. ``config``: the build config
    (``pipelines.config.BuildConfig``: filters, scan, metrics, quality)."""
    from ..filters import Thresholds, check_record
    from ..scan import make_settings, scan_row
    from . import check_metadata

    storage = storage_or_default(storage)
    out = Inspection(spec.name, spec.kind, spec.path)
    try:
        predicted = any(s.name == "wd_tagger" for s in config.scorers)
        check_metadata([spec], config.filters, predicted, storage)
    except ValueError as exc:
        out.refused = str(exc)
    try:
        records = _files_and_records(spec, storage, limit, max_archives, out)
    except (MappingError, TableError, ValueError, OSError) as exc:
        out.refused = out.refused or f"source {spec.describe()}: {exc}"
        return out
    settings = make_settings(
        scan=config.scan, filters=config.filters, metrics=config.metrics, quality=config.quality,
        sources=[], scores=np.array([]), favs=np.array([]),
    )  # fmt: skip
    settings = replace(settings, storage=storage)
    root = spec.images or (dirname(spec.path) if is_file(spec.path, storage) else spec.path)
    for rec in records:
        row = rec.to_row()
        verdict = {
            "status": "rejected",
            "stage": "metadata",
            "reason": rec.reject_reason,
            "detail": rec.reject_detail,
        }
        if rec.reject_reason is None and pixels:
            scanned, _ = scan_row(row, settings)
            verdict = {k: scanned.get(k) for k in ("status", "stage", "reason", "detail")}
            if scanned.get("width"):
                verdict["size"] = [scanned["width"], scanned["height"]]
        elif rec.reject_reason is None:  # --no-pixels: the metadata filters only
            failed = check_record(row, config.filters, Thresholds(), min_side=config.scan.min_side,
                                  max_aspect=config.scan.max_aspect)  # fmt: skip
            verdict = {"status": "rejected", "stage": "metadata", "reason": failed[0], "detail": failed[1]} if failed \
                else {"status": "kept (metadata only)", "stage": None, "reason": None, "detail": None}  # fmt: skip
        out.records.append({
            "key": rec.key, "id": rec.post_id, "source_id": rec.source_id, "rating": rec.rating,
            "rating_era": rec.rating_era, "tags": {c: " ".join(rec.tags.get(c, [])) for c in TAG_CATEGORIES},
            "caption": rec.caption or "", "uncategorised_tags": rec.uncategorised_tags, "score": rec.score,
            "image": _location(rec, root), "verdict": verdict,
        })  # fmt: skip
    return out


__all__ = ["Inspection", "MAX_ARCHIVES", "inspect_source"]
