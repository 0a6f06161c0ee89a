"""Records of dumps made of a metadata table and archives of images (hf-tar, sqlite, duckdb, a
linepairs OUT), or of archives alone whose sidecars are the metadata (webdataset).

Every table row and every archive member is accounted for:

* a row whose image member exists -> a record located in that member;
* a row without a member -> ``missing_file``; a member without a row -> ``no_metadata``;
* a second image member of one id -> ``duplicate_id``; a damaged archive -> ``bad_archive``;
* a member that is neither an image nor a sidecar of one -> counted, and reported once.

Sidecars (``KEY.json``, ``KEY.txt`` / ``KEY.caption``, ``KEY.tags``) fill what the row does not
give, field by field, in this order of precedence: the table row, then the ``.json``, then the caption
file (tags and prose), then the ``.tags`` file. They are read only for rows that lack one of tags,
rating or caption, one small read each.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..decode import DecodeReject
from ..records import Record
from ..storage import SourceStorage, relpath
from ..tags import TagTable
from .archives import SIDECAR_SUFFIXES, Sample, Samples, collect, read_member, stray_line
from .common import as_int, record_from_post
from .mapping import Mapping, post_of
from .seen import SeenIds
from .sidecars import SIDECAR_MAX_BYTES, decode_text, load_json, parse_caption, parse_tag_file, post_from_json

Notes = Callable[[str], None]


def print_note(prefix: str) -> Notes:
    """Notes as one stderr line each (what a build shows); ``inspect`` collects them instead."""
    return lambda line: print(f"linepairs: {prefix}: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ReadOptions:
    """How sidecars are read (``[sidecars]`` in the config, docs/config.md)."""

    captions: tuple[str, ...] = (".txt", ".caption")  # caption file extensions, in order of preference
    tag_table: TagTable | None = None  # categories for tags that come without one

    @property
    def sidecar_suffixes(self) -> tuple[str, ...]:
        caps = tuple(e.lstrip(".").lower() for e in self.captions)
        return tuple(dict.fromkeys(("json", *caps, "tags")))

    @property
    def caption_suffixes(self) -> tuple[str, ...]:
        return tuple(e.lstrip(".").lower() for e in self.captions)


DEFAULT_OPTIONS = ReadOptions()


def record_from_fields(
    source: str,
    source_id: str,
    post: dict[str, Any],
    where: str,
    era: str | None,
    *,
    rating_required: bool,
) -> Record:
    """record_from_post for a post that may have no id (a WebDataset sample, a folder-origin sample
    of a linepairs OUT): the post's checks and coercions, with ``source_id`` as its id then."""
    post_id = as_int(post.get("id"))
    if post_id is not None and post_id > 0:
        return record_from_post(source, post, where, era, rating_required=rating_required)
    rec = record_from_post(source, {**post, "id": 1}, where, era, rating_required=rating_required)
    rec.post_id, rec.source_id = None, source_id
    return rec


@dataclass
class SidecarMeta:
    post: dict[str, Any]
    tags: dict[str, list[str]] | None = None
    caption: str | None = None
    uncategorised: int | None = None


def read_sidecars(sample: Sample, options: ReadOptions, storage: SourceStorage | None) -> SidecarMeta:
    """The metadata a sample's sidecars give, merged: .json, then the caption file, then .tags.
    Raises ValueError (unreadable or malformed sidecar: a bad_metadata reject)."""
    meta = SidecarMeta({})
    table = options.tag_table

    def text(suffix: str) -> str:
        try:
            return decode_text(read_member(sample.sidecars[suffix], SIDECAR_MAX_BYTES, storage))
        except (OSError, DecodeReject) as exc:
            raise ValueError(f"{sample.key}.{suffix} cannot be read: {exc}") from None

    if "json" in sample.sidecars:
        try:
            obj = load_json(text("json").encode())
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{sample.key}.json is not JSON: {type(exc).__name__}: {exc}"[:200]) from None
        meta.post, meta.tags, meta.caption, meta.uncategorised = post_from_json(obj, table)
    for suffix in options.caption_suffixes:
        if suffix in sample.sidecars:
            tags, prose, missing = parse_caption(text(suffix), table)
            if meta.tags is None and not _post_has_tags(meta.post):
                meta.tags, meta.uncategorised = tags, missing
            meta.caption = meta.caption or prose
            break
    if "tags" in sample.sidecars and meta.tags is None and not _post_has_tags(meta.post):
        meta.tags, meta.uncategorised = parse_tag_file(text("tags"), table)
    return meta


def _post_has_tags(post: dict[str, Any]) -> bool:
    return any(k == "tag_string" or k.startswith("tag_string_") or k == "tags" for k in post)


def _apply(rec: Record, tags: dict[str, list[str]] | None, caption: Any, uncategorised: int | None) -> None:
    if tags is not None:
        rec.tags = tags
        rec.uncategorised_tags = uncategorised
    if isinstance(caption, str) and caption.strip():
        rec.caption = caption


def _attach(rec: Record, sample: Sample) -> None:
    rec.location = sample.image.location
    ext = sample.image.name.rpartition("/")[2].rpartition(".")[2].lower()
    rec.ext = ext or rec.ext


def iter_joined(
    source: str,
    tables: Iterable[tuple[Mapping, Iterator[tuple[str, dict[str, Any]]]]],
    samples: Samples,
    *,
    era: str | None,
    root: str,
    options: ReadOptions,
    storage: SourceStorage | None = None,
    by: str = "id",
    unrated_ok: bool = False,
    notes: Notes | None = None,
) -> Iterator[Record]:
    """Table rows (``(mapping, rows)`` per table, a row ``(where, row)``) joined to the samples of
    the archives (see the module docstring).

    ``by``: rows and members meet on the post id (``id``) or on the sample key (``key``, a
    linepairs OUT). A row without a rating is ``bad_rating`` when the table has a rating column,
    unless ``unrated_ok`` (an older build's unrated folder samples)."""
    claimed = SeenIds()
    for mapping, rows in tables:
        yield from _joined_rows(
            source, mapping, rows, samples, claimed, era=era, root=root, options=options, storage=storage,
            by=by, unrated_ok=unrated_ok,
        )  # fmt: skip
    yield from samples.problems
    for joined, sample in samples.by_key.items():
        rel = relpath(sample.image.archive, root)
        yield Record(
            source, joined, None, ext=sample.image.name.rpartition(".")[2].lower() or None,
            reject_reason="no_metadata",
            reject_detail=f"{rel}:{sample.image.name} has no row in the metadata",
        )  # fmt: skip
    _note_samples(samples, notes)


def _joined_rows(
    source: str,
    mapping: Mapping,
    rows: Iterator[tuple[str, dict[str, Any]]],
    samples: Samples,
    claimed: SeenIds,
    *,
    era: str | None,
    root: str,
    options: ReadOptions,
    storage: SourceStorage | None,
    by: str,
    unrated_ok: bool,
) -> Iterator[Record]:
    rating_required = mapping.gives("rating") and not unrated_ok
    use_sidecars = not (mapping.gives("tags") and mapping.gives("rating") and mapping.gives("caption"))
    id_column = next((c for c, f, _ in mapping.mapped if f == "id"), None)
    for where, row in rows:
        try:
            post, tags, uncategorised = post_of(row, mapping, options.tag_table)
        except ValueError as exc:
            # the row's own reject accounts for its member, like any other rejected row
            post_id = as_int(row.get(id_column)) if id_column else None
            post_id = post_id if post_id is not None and post_id > 0 else None
            joined = str(row.get("key") or "") if by == "key" else str(post_id or "")
            if joined and samples.by_key.pop(joined, None) is not None:
                claimed.add(joined)
            yield Record(source, joined or where, None, post_id=post_id, reject_reason="bad_metadata",
                         reject_detail=f"{where}: {exc}"[:300])  # fmt: skip
            continue
        key = str(row.get("key") or "") if by == "key" else None
        sample = None
        if by == "key":
            sample = samples.by_key.pop(key, None) if key else None
        else:
            post_id = as_int(post.get("id"))
            if post_id is not None and post_id > 0:
                sample = samples.by_key.pop(str(post_id), None)
        problem = None
        if sample is not None and use_sidecars and sample.sidecars:
            try:
                side = read_sidecars(sample, options, storage)
            except ValueError as exc:
                problem = str(exc)
            else:
                post = {**side.post, **{k: v for k, v in post.items() if v is not None}}
                if tags is None:
                    tags, uncategorised = side.tags, side.uncategorised
                if not post.get("caption") and side.caption:
                    post["caption"] = side.caption
        if by == "key":  # an older build's sample: its key is its id here, its post id stays the id
            rec = record_from_fields(source, key or where, post, where, era, rating_required=rating_required)
            rec.source_id = key or rec.source_id
        else:
            rec = record_from_post(source, post, where, era, rating_required=rating_required)
        if rec.reject_reason is None and problem:
            rec.reject_reason, rec.reject_detail = "bad_metadata", problem[:300]
        _apply(rec, tags, post.get("caption"), uncategorised)
        if by == "key" and row.get("rating_era") in ("old", "new") and rec.rating is not None:
            rec.rating_era = row["rating_era"]
        joined = key if by == "key" else rec.source_id
        if sample is not None:
            claimed.add(joined)  # a row's own reject accounts for its member too
            if rec.reject_reason is None:
                _attach(rec, sample)
        elif rec.reject_reason is None and joined not in claimed:  # a repeated row is flagged later
            rec.reject_reason = "missing_file"
            rec.reject_detail = f"no {joined}.* member in the archives below {root}"
        yield rec


def _note_samples(samples: Samples, notes: Notes | None) -> None:
    if notes is None:
        return
    for line in samples.notes:
        notes(line)
    if samples.strays:
        notes(stray_line(samples.strays))


def iter_webdataset(
    source: str,
    archives: list[str],
    root: str,
    *,
    era: str | None,
    options: ReadOptions,
    storage: SourceStorage | None = None,
    notes: Notes | None = None,
) -> Iterator[Record]:
    """Archives without a metadata table: each sample's sidecars are its metadata (a sample without
    any has no tags and no rating, like a folder image without a caption file)."""
    strays: Counter = Counter()
    for path in archives:
        samples = collect(source, [path], root, storage, sidecars=options.sidecar_suffixes)
        for joined, sample in samples.by_key.items():
            where = f"{relpath(path, root)}:{sample.key}"
            try:
                side = read_sidecars(sample, options, storage)
            except ValueError as exc:
                yield Record(source, joined, None, reject_reason="bad_metadata", reject_detail=str(exc)[:300])
                continue
            post = side.post
            suffix = sample.image.name.rpartition(".")[2].lower()
            post.setdefault("file_ext", suffix)
            post_id = as_int(post.get("id"))
            if (post_id is None or post_id <= 0) and joined.isdigit():
                post["id"] = int(joined)  # a member named by its post id
            source_id = str(as_int(post.get("id"))) if (as_int(post.get("id")) or 0) > 0 else joined
            rec = record_from_fields(source, source_id, post, where, era, rating_required=False)
            _apply(rec, side.tags, side.caption, side.uncategorised)
            if rec.reject_reason is None:
                _attach(rec, sample)
            yield rec
        yield from samples.problems
        strays.update(samples.strays)
        if notes is not None:
            for line in samples.notes:
                notes(line)
    if notes is not None and strays:
        notes(stray_line(strays))


__all__ = ["ReadOptions", "SIDECAR_SUFFIXES", "iter_joined", "iter_webdataset", "print_note", "read_sidecars"]
