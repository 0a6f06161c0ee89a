"""Before the scan: does each source's metadata give what the filters read?

A tag filter over a source whose tags map from nothing would keep everything (``banned_tags``) or
reject everything (``min_tags``), and a rating filter over one without ratings would do the same;
neither is what was asked. ``check_needs`` refuses such a build with one line naming the source,
the filter, the columns it has and the ways out, before a single record is enumerated.

Checked: the kinds whose metadata is a table (hf-tar, sqlite, duckdb, parquet-images, linepairs),
from the table's columns (plus the sidecar members of the first archive, which fill what a row
lacks), and the post JSON kinds (danbooru-api, gwern), from their first posts. Not checked: a
folder or a WebDataset tar, whose images may or may not have caption sidecars by design (an image
without one has no tags and no rating: ``filters.ratings`` decides on ``unrated``, and
``[scorers.wd_tagger]`` predicts both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import TAG_CATEGORIES
from ..storage import SourceStorage, dirname, storage_or_default
from .archives import archives_below, list_archive, split_key
from .common import MetadataRefused, is_file, iter_json_posts

SAMPLE_POSTS = 1000  # posts of a JSON dump looked at for its fields


@dataclass
class Gives:
    """What a source's metadata gives (None: not decided from the metadata, see the docstring)."""

    tags: bool | None
    rating: bool | None
    where: str  # what was looked at, for the message
    columns: list[str] = field(default_factory=list)

    def get(self, what: str) -> bool | None:
        return getattr(self, what)


def _sidecar_fields(spec, storage: SourceStorage | None) -> set[str]:
    """What the sidecars of the first archive can give: .json tags and rating, caption files tags."""
    from .spec import read_options

    root = spec.images or (dirname(spec.path) if is_file(spec.path, storage) else spec.path)
    archives = archives_below(root, storage)
    if not archives:
        return set()
    listing = list_archive(spec.name, archives[0], root, storage)
    suffixes = {split_key(m.name)[1] for m in listing.members}
    out = set()
    if "json" in suffixes:
        out |= {"tags", "rating"}
    if suffixes & {*read_options(spec).caption_suffixes, "tags"}:
        out.add("tags")
    return out


def _from_mappings(mappings, where: str, sidecars: set[str]) -> Gives:
    columns = sorted(
        {c for m in mappings for c, _, _ in m.mapped} | {c for m in mappings for c in m.unmapped}
    )
    return Gives(
        tags=all(m.gives("tags") for m in mappings) or "tags" in sidecars,
        rating=all(m.gives("rating") for m in mappings) or "rating" in sidecars,
        where=where,
        columns=columns,
    )


def metadata_gives(spec, storage: SourceStorage | None = None) -> Gives:
    """What ``spec``'s metadata gives; reads schemas (and the first posts of a JSON dump) only. A
    metadata file the policy refuses (a link out, a FIFO) decides nothing: it is one reject row."""
    try:
        return _gives(spec, storage_or_default(storage))
    except MetadataRefused as exc:
        return Gives(None, None, f"{exc.path.rpartition('/')[2]} (not read: {exc.reason})")


def _gives(spec, storage: SourceStorage) -> Gives:
    kind = spec.kind
    if kind in ("folder", "webdataset"):
        return Gives(None, None, "sidecars")
    if kind == "hf-tar":
        from .hf_tar import open_tables

        tables, _ = open_tables(spec.path, storage)  # a refused parquet gives no rows at all
        mappings = [m for _, m in tables]
        where = ", ".join(t.where for t, _ in tables)
        need_side = not all(m.gives("tags") and m.gives("rating") for m in mappings)
        return _from_mappings(mappings, where, _sidecar_fields(spec, storage) if need_side else set())
    if kind in ("sqlite", "duckdb"):
        from .database import DbSource
        from .spec import database_file

        db = DbSource(database_file(spec), kind)
        try:
            m = db.mapping
            need_side = not (m.gives("tags") and m.gives("rating"))
            side = _sidecar_fields(spec, storage) if need_side else set()
            return _from_mappings([m], m.where, side)
        finally:
            db.close()
    if kind == "parquet-images":
        from .parquet_images import open_tables

        tables, _ = open_tables(spec.path, storage)
        return _from_mappings([m for _, _, m in tables], ", ".join(t.where for t, _, _ in tables), set())
    if kind == "linepairs":
        from .linepairs_out import open_manifest

        _, mapping = open_manifest(spec.path, storage)
        return _from_mappings([mapping], mapping.where, set())
    return _json_gives(spec, storage)


def _json_gives(spec, storage: SourceStorage) -> Gives:
    from .gwern import metadata_files
    from .spec import _json_files

    if spec.kind == "gwern":
        files = metadata_files(spec.path, storage)
    else:
        files = [spec.path] if is_file(spec.path, storage) else _json_files(spec.path, storage)
    keys: set[str] = set()
    seen = 0
    for path in files:
        for _, post in iter_json_posts(path, storage):
            if isinstance(post, dict):
                keys |= set(post)
                seen += 1
            if seen >= SAMPLE_POSTS:
                break
        if seen >= SAMPLE_POSTS:
            break
    tag_keys = {"tags", "tag_string", *(f"tag_string_{c}" for c in TAG_CATEGORIES)}
    where = f"the first {seen} posts of {files[0].rpartition('/')[2]}" if files else "no post file"
    return Gives(bool(keys & tag_keys), "rating" in keys, where, sorted(keys))


_WAYS_OUT = {
    "tags": "map a tag column (tag_string, tag_string_<category>, tags) or give caption/.json sidecars, "
    "or set filters.banned_tags = [], filters.required_tags = [] and filters.min_tags = 0",
    "rating": "map a rating column (rating: g/s/q/e, 0-3 or a word), or keep every class "
    '(filters.ratings = ["general", "safe", "sensitive", "questionable", "explicit", "unrated"])',
}


def check_needs(specs, needs: dict[str, str], storage: SourceStorage | None = None) -> None:
    """ValueError (one line) for the first source whose metadata gives nothing for a field in
    ``needs`` (field -> the filter settings that read it, ``curation.filters.needed_fields``)."""
    if not needs:
        return
    for spec in specs:
        gives = metadata_gives(spec, storage)
        for what, because in needs.items():
            if gives.get(what) is False:
                shown = ", ".join(gives.columns[:20]) + (" ..." if len(gives.columns) > 20 else "")
                raise ValueError(
                    f"source {spec.describe()}: {because} read the {what}, but nothing in its metadata "
                    f"maps to {what} ({gives.where}: {shown or 'no fields'}); "
                    f"{_WAYS_OUT[what]}, or add [scorers.wd_tagger] to predict {what}"
                )


__all__ = ["Gives", "check_needs", "metadata_gives"]
