"""Column -> record field, one table per dump kind, in one place.

A metadata table (parquet, SQLite, DuckDB, a linepairs manifest) is read through a ``Mapping``
resolved from its columns before a row is read: which column gives which field and how its values
are read (a tag string is split on whitespace, a list of strings is a tag list, ...). A column of a
shape that cannot be read unambiguously is refused with ``MappingError`` naming the column and a
sample value, and ``check_needs`` refuses, before the scan, a source whose mapping gives nothing for
a field the filters need (tags when a tag filter is set, the rating when a rating filter is set):
a filter must never pass everything because the field it reads is silently empty.

Field names are the Danbooru API's (``image_width``, ``file_ext``, ...), which
``curation.sources.common.record_from_post`` reads; tags come out as lists per category.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from typing import Any

from ..records import TAG_CATEGORIES
from ..tags import CATEGORY_BY_NUMBER, TagTable, categorise
from .common import as_int

# shape -> what it means, as `inspect` prints it
SHAPES = {
    "int": "integer (numbers or digit strings)",
    "float": "number",
    "str": "text",
    "bool": "boolean (true/false, 0/1)",
    "rating": "rating (g/s/q/e letter, 0-3 number or word)",
    "era": "rating era (old/new)",
    "caption": "prose caption",
    "key": "sample key (joins the shard members)",
}

# One table per dump kind: (column, field, shape), in order of preference (the first column present
# gives a field). "tags.<category>" fields are tag columns of one category; "tags" is a flat tag
# column (all categories: filed by the tag table when one is given, else general).
DANBOORU_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "id", "int"),
    ("md5", "md5", "str"),
    ("file_ext", "file_ext", "str"),
    ("ext", "file_ext", "str"),
    ("extension", "file_ext", "str"),  # Jannchie's posts table has both names
    ("image_width", "image_width", "int"),
    ("width", "image_width", "int"),
    ("image_height", "image_height", "int"),
    ("height", "image_height", "int"),
    ("rating", "rating", "rating"),
    ("score", "score", "int"),
    ("score_total", "score", "int"),
    ("fav_count", "fav_count", "int"),
    ("is_deleted", "is_deleted", "bool"),
    ("is_banned", "is_banned", "bool"),
    ("is_pending", "is_pending", "bool"),
    ("is_flagged", "is_flagged", "bool"),
    ("duration", "duration", "float"),
    *((f"tag_string_{c}", f"tags.{c}", "tags") for c in TAG_CATEGORIES),
    ("tag_string", "tags", "tags"),
    ("tags", "tags", "tags"),
    ("caption", "caption", "caption"),
)
# KBlueLeaf's danbooru2023 metadata database: the Danbooru names in table ``post``; ``rating`` is
# 0..3 (general, sensitive, questionable, explicit); tags come from the post<->tag relation (or, in
# its first release, ``tag_list_<type>`` columns of ``$<base36 tag id>#`` tokens), see database.py.
KBLUELEAF_COLUMNS = DANBOORU_COLUMNS
# A linepairs OUT's manifest.parquet (docs/output.md): one row per sample of an older build.
MANIFEST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("key", "key", "key"),
    ("post_id", "id", "int"),
    ("rating", "rating", "rating"),
    ("rating_era", "rating_era", "era"),
    ("score", "score", "float"),
    ("fav_count", "fav_count", "int"),
    *((f"tags_{c}", f"tags.{c}", "tags") for c in TAG_CATEGORIES),
    ("caption", "caption", "caption"),
    ("uncategorised_tags", "uncategorised_tags", "int"),
)
TABLES = {"danbooru": DANBOORU_COLUMNS, "kblueleaf": KBLUELEAF_COLUMNS, "linepairs": MANIFEST_COLUMNS}


class MappingError(ValueError):
    """A metadata column that cannot be read as the field it maps to, or a needed field that maps
    from nothing; the message is one line naming the source, the column and a sample value."""


@dataclass(frozen=True)
class Column:
    """One column of a metadata table: its name, its type as the reader reports it, and how to
    fetch a sample value (read only when a mapping needs to look at one)."""

    name: str
    type: str  # "string", "int64", "list<string>", "list<struct<name, category>>", "null", ...
    sampler: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    @property
    def sample(self) -> Any:
        """The first non-null value of the column (None when it is empty)."""
        return self.sampler() if self.sampler is not None else None


@dataclass
class Mapping:
    """The mapping actually used for one table: ``mapped`` (column, field, how), columns nobody
    reads (``unmapped``), fields of the kind no column gives (``missing``)."""

    kind: str
    where: str  # the file (and table) the columns come from
    mapped: list[tuple[str, str, str]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    readers: dict[str, Callable[[Any], Any]] = field(default_factory=dict, repr=False)
    extra: list[tuple[str, str, str]] = field(default_factory=list)  # fields from elsewhere (a relation)

    def gives(self, what: str) -> bool:
        """Whether some column (or relation) gives ``what`` ("tags", "rating", a field name)."""
        fields = [f for _, f, _ in self.mapped + self.extra]
        if what == "tags":
            return any(f == "tags" or f.startswith("tags.") for f in fields)
        return what in fields

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "where": self.where,
            "mapped": [{"column": c, "field": f, "how": h} for c, f, h in self.mapped + self.extra],
            "unmapped": list(self.unmapped),
            "missing": list(self.missing),
        }


def _is_list_of(type_: str, inner: str) -> bool:
    t = type_.replace("large_list", "list")
    return t.startswith("list<") and inner in t


def _tag_reader(column: Column, where: str) -> tuple[Callable[[Any], Any], str]:
    """How a tag column's values are read, from its type (and sample)."""
    t = column.type
    if t in ("string", "large_string", "null"):
        # Danbooru's tag strings never hold ", " (a tag has no space); a caption-style list does
        sample = column.sample
        if isinstance(sample, str) and ", " in sample:
            return _comma_tags, "comma-separated tags, split on commas"
        return _split_tags, "space-separated tag string, split on whitespace"
    if _is_list_of(t, "struct") and "name" in t:
        return _tag_objects, "list of {name, category} objects (gwern)"
    if _is_list_of(t, "string") or t == "list<item: string>":
        return _tag_list, "list of tags"
    raise MappingError(
        f"column {column.name!r} of {where} holds {t} (e.g. {_sample(column.sample)}); tags must be "
        f"a string of space-separated tags or a list of strings"
    )


def _split_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    raise ValueError(f"a tag string, got {_sample(value)}")


def _comma_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t for t in (p.strip() for p in value.split(",")) if t]
    raise ValueError(f"a tag string, got {_sample(value)}")


def _tag_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple) and all(isinstance(t, str) for t in value):
        return list(value)
    raise ValueError(f"a list of tags, got {_sample(value)}")


def _tag_objects(value: Any) -> dict[str, list[str]]:
    out = {c: [] for c in TAG_CATEGORIES}
    for tag in value or ():
        if isinstance(tag, dict) and isinstance(tag.get("name"), str):
            out[CATEGORY_BY_NUMBER.get(as_int(tag.get("category")) or 0, "general")].append(tag["name"])
    return out


def _sample(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _scalar_reader(column: Column, shape: str, where: str) -> Callable[[Any], Any]:
    """Scalars are coerced later by record_from_post (as_int, as_bool, ...); only a container
    where a scalar belongs is refused here."""
    t = column.type
    if t.startswith(("list", "large_list", "struct", "map")):
        raise MappingError(
            f"column {column.name!r} of {where} holds {t} (e.g. {_sample(column.sample)}); "
            f"it maps to a {SHAPES[shape]}, not a list or structure"
        )
    return _identity


def _identity(value: Any) -> Any:
    return value


def resolve(kind: str, columns: Sequence[Column], where: str) -> Mapping:
    """The mapping of a table's columns for ``kind`` (a key of TABLES); MappingError for a column
    of the wrong shape."""
    table = TABLES[kind]
    present = {c.name: c for c in columns}
    mapping = Mapping(kind, where)
    taken: set[str] = set()
    per_category = any(f"tags.{c}" == f and col in present for col, f, _ in table for c in TAG_CATEGORIES)
    used: set[str] = set()
    for col, target, shape in table:
        if col not in present or target in taken:
            continue
        if target == "tags" and per_category:
            continue  # the per-category columns are the richer source
        column = present[col]
        if shape == "tags":
            reader, how = _tag_reader(column, where)
        else:
            reader, how = _scalar_reader(column, shape, where), SHAPES[shape]
        mapping.mapped.append((col, target, how))
        mapping.readers[col] = reader
        taken.add(target)
        used.add(col)
    mapping.unmapped = [c.name for c in columns if c.name not in used]
    wanted = dict.fromkeys(t for _, t, _ in table)
    if per_category:
        wanted.pop("tags", None)
    elif "tags" in taken:
        for c in TAG_CATEGORIES:
            wanted.pop(f"tags.{c}", None)
    mapping.missing = [t for t in wanted if t not in taken]
    return mapping


def post_of(
    row: AbcMapping[str, Any], mapping: Mapping, table: TagTable | None = None
) -> tuple[dict[str, Any], dict[str, list[str]] | None, int | None]:
    """A table row as (post fields for record_from_post, tags per category or None when the table
    maps no tag column, uncategorised tag count or None). Raises ValueError for a value of the
    wrong shape in this row (a bad_metadata reject)."""
    post: dict[str, Any] = {}
    tags: dict[str, list[str]] | None = None
    uncategorised: int | None = None
    for col, target, _ in mapping.mapped + mapping.extra:
        if col not in mapping.readers:
            continue
        value = mapping.readers[col](row.get(col))
        if target == "tags":
            if isinstance(value, dict):  # gwern objects carry their categories
                tags = value
            else:
                tags, uncategorised = categorise(value, table)
        elif target.startswith("tags."):
            tags = tags or {c: [] for c in TAG_CATEGORIES}
            tags[target[5:]] = value
        else:
            post[target] = value
    return post, tags, uncategorised


__all__ = [
    "DANBOORU_COLUMNS", "MANIFEST_COLUMNS", "Column", "Mapping", "MappingError", "TABLES", "post_of", "resolve",
]  # fmt: skip
