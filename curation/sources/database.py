"""SQLite and DuckDB metadata databases, streamed (``tables.Database``).

Layouts read (docs/sources.md has the sources of each fact):

* KBlueLeaf's danbooru2023 metadata database (``.db`` SQLite, ``.duckdb``; Peewee models in its
  ``db.py``): table ``post`` with the Danbooru column names, ``rating`` 0-3 (general, sensitive,
  questionable, explicit); table ``tag`` (``id, name, type, popularity``; ``type`` 0 general,
  1 artist, 2 character, 3 copyright, 4 meta); the post<->tag relation ``posttagrelation``
  (``post_id, tag_id``). Its first release stored tag lists in the post table instead, as
  ``tag_list_<type>`` text of ``$<base36 tag id>#`` tokens; both are read.
* Jakaline's Danbooru2023_metadata (one SQLite table with the API's columns: ``id, md5, rating,
  tag_string_<category>, ...``) and Jannchie's danbooru_metadata (table ``posts``: the API's columns,
  booleans as 0/1): the Danbooru mapping (``mapping.DANBOORU_COLUMNS``).

The post table is ``post`` or ``posts``, else the one table with an ``id`` and Danbooru columns.
Posts stream in id order; the relation streams in post order beside them (a merge join), so memory
holds one batch of each plus the tag table (names and categories, ~1 M tags).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..records import TAG_CATEGORIES
from ..tags import CATEGORY_BY_NUMBER
from .mapping import DANBOORU_COLUMNS, Mapping, resolve
from .tables import Database, TableError, _quote

KBLUELEAF_TYPES = ("general", "artist", "character", "copyright", "meta")  # Tag.type enum
RELATION = "posttagrelation"
RELATION_COLUMN = "posttagrelation.tag_id -> tag.name"  # how the relation's tags appear in a mapping
TAG_LIST_COLUMN = "tag_list_<type> ($base36# tokens) -> tag.name"
_DANBOORU_NAMES = {c for c, _, _ in DANBOORU_COLUMNS}


class DbSource:
    """One metadata database: its post table, its mapping and its rows."""

    def __init__(self, path: str, engine: str, root: str | None = None):
        """``root``: the source folder the file must stay in (MetadataRefused otherwise, or for a FIFO)."""
        self.db = Database(path, engine, root)
        self.path = path
        self.name = path.rpartition("/")[2]
        tables = self.db.tables()
        self.table = self._post_table(tables)
        self.columns = self.db.columns(self.table)
        names = [c.name for c in self.columns]
        self.mapping: Mapping = resolve("danbooru", self.columns, f"{self.name}:{self.table}")
        self.tag_mode: str | None = None
        self.tag_list_columns = [n for n in names if n == "tag_list" or n.startswith("tag_list_")]
        if not self.mapping.gives("tags") and "tag" in tables:
            if RELATION in tables or self._relation_table(tables):
                self.tag_mode = "relation"
                self.relation = RELATION if RELATION in tables else self._relation_table(tables)
                self.mapping.extra.append(
                    (RELATION_COLUMN, "tags", f"{self.relation} joined to tag; tag.type as category")
                )
            elif self.tag_list_columns:
                self.tag_mode = "tag_list"
                self.mapping.extra.append((TAG_LIST_COLUMN, "tags", "tag ids in base 36 between $ and #"))
            if self.tag_mode:
                self.mapping.missing = [m for m in self.mapping.missing if not m.startswith("tags")]
                self.mapping.unmapped = [u for u in self.mapping.unmapped if u not in self.tag_list_columns]
        self.order = "id" if "id" in names else None

    def close(self) -> None:
        self.db.close()

    def _post_table(self, tables: list[str]) -> str:
        for name in ("post", "posts"):
            if name in tables:
                return name
        candidates = []
        for t in tables:
            cols = {c.name for c in self.db.columns(t)}
            if "id" in cols and len(cols & _DANBOORU_NAMES) >= 3:
                candidates.append(t)
        if len(candidates) == 1:
            return candidates[0]
        raise TableError(
            f"{self.path}: no post table (looked for 'post', 'posts', or one table with id and Danbooru "
            f"columns); its tables: {', '.join(tables) or '(none)'}"
        )

    def _relation_table(self, tables: list[str]) -> str | None:
        for t in tables:
            if {"post_id", "tag_id"} <= {c.name for c in self.db.columns(t)}:
                return t
        return None

    def count(self) -> int:
        return self.db.count(self.table)

    def _tag_names(self) -> dict[int, tuple[str, str]]:
        """tag id -> (name, category), from table ``tag`` (KBlueLeaf's ``type`` enum, or a Danbooru
        ``category`` number)."""
        cols = {c.name for c in self.db.columns("tag")}
        if "name" not in cols or not ({"type", "category"} & cols):
            raise TableError(
                f"{self.path}: table tag has no name and type/category columns ({', '.join(sorted(cols))})"
            )
        kind = "type" if "type" in cols else "category"
        names: dict[int, tuple[str, str]] = {}
        for tag_id, name, value in self.db.stream(f"SELECT id, name, {_quote(kind)} FROM tag"):
            if not isinstance(name, str):
                continue
            if kind == "type":
                cat = (
                    KBLUELEAF_TYPES[value]
                    if isinstance(value, int) and 0 <= value < len(KBLUELEAF_TYPES)
                    else "general"
                )
            else:
                cat = CATEGORY_BY_NUMBER.get(value if isinstance(value, int) else -1, "general")
            names[int(tag_id)] = (name, cat)
        return names

    def _columns_read(self) -> list[str]:
        cols = [c for c, _, _ in self.mapping.mapped]
        if self.tag_mode == "tag_list":
            cols += [c for c in self.tag_list_columns if c not in cols]
        if "id" not in cols and self.order:
            cols.append("id")
        return cols

    def rows(self, limit: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, row) of every post in id order; the relation's tags as one more column."""
        cols = self._columns_read()
        sql = f"SELECT {', '.join(map(_quote, cols))} FROM {_quote(self.table)}"
        if self.order:
            sql += f" ORDER BY {_quote(self.order)}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        posts = (dict(zip(cols, values, strict=True)) for values in self.db.stream(sql))
        where = f"{self.name}:{self.table}"
        if self.tag_mode is None:
            for n, row in enumerate(posts):
                yield f"{where}:{row.get('id', n)}", row
            return
        names = self._tag_names()
        if self.tag_mode == "tag_list":
            columns = self.tag_list_columns
            # parsed by post_of, so a malformed token is this row's bad_metadata, not the stream's end
            self.mapping.readers[TAG_LIST_COLUMN] = lambda texts: _from_tag_lists(texts, columns, names)
            for n, row in enumerate(posts):
                row[TAG_LIST_COLUMN] = {c: row.get(c) for c in columns}
                yield f"{where}:{row.get('id', n)}", row
            return
        self.mapping.readers[RELATION_COLUMN] = _identity
        yield from self._merged(posts, names, where, limit)

    def _merged(
        self,
        posts: Iterator[dict[str, Any]],
        names: dict[int, tuple[str, str]],
        where: str,
        limit: int | None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        rel_cols = {c.name for c in self.db.columns(self.relation)}
        order = "post_id, id" if "id" in rel_cols else "post_id"
        which = "post_id IS NOT NULL"
        if limit is not None:  # a peek (inspect): these posts' pairs only, never a sort of the whole relation
            peeked = list(posts)
            ids = [r["id"] for r in peeked if isinstance(r.get("id"), int)]
            posts = iter(peeked)
            which = f"post_id IN ({', '.join(str(i) for i in ids) or 'NULL'})"
        sql = f"SELECT post_id, tag_id FROM {_quote(self.relation)} WHERE {which} ORDER BY {order}"
        pairs = self.db.stream(sql)
        pending = next(pairs, None)
        for n, row in enumerate(posts):
            post_id = row.get("id")
            tags = {c: [] for c in TAG_CATEGORIES}
            if isinstance(post_id, int):
                while pending is not None and pending[0] < post_id:  # a relation row of no post
                    pending = next(pairs, None)
                while pending is not None and pending[0] == post_id:
                    hit = names.get(pending[1])
                    if hit is not None:
                        tags[hit[1]].append(hit[0])
                    pending = next(pairs, None)
            row[RELATION_COLUMN] = tags
            yield f"{where}:{row.get('id', n)}", row


def _identity(value: Any) -> Any:
    return value


def _from_tag_lists(
    texts: dict[str, Any], columns: list[str], names: dict[int, tuple[str, str]]
) -> dict[str, list[str]]:
    """KBlueLeaf's first schema: ``$<base36 id>#`` tokens; per-type columns win over ``tag_list``."""
    tags = {c: [] for c in TAG_CATEGORIES}
    typed = [c for c in columns if c != "tag_list"]
    for col in typed or columns:
        text = texts.get(col)
        if not isinstance(text, str):
            continue
        for token in text.strip("$#").split("#$"):
            if not token:
                continue
            try:
                hit = names.get(int(token, 36))
            except ValueError:
                raise ValueError(f"{col} holds {token!r}, not a base-36 tag id") from None
            if hit is not None:
                cat = (
                    col[len("tag_list_") :]
                    if col.startswith("tag_list_") and col[9:] in TAG_CATEGORIES
                    else hit[1]
                )
                tags[cat].append(hit[0])
    return tags


__all__ = ["DbSource", "KBLUELEAF_TYPES", "RELATION"]
