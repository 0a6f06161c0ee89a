"""Metadata tables read as row streams: parquet (row groups, ranged reads on a store), SQLite
(the standard library's ``sqlite3``) and DuckDB (``duckdb``). Nothing is loaded whole: rows come
in batches, so memory stays bounded at any number of posts (``linepairs bench --only sources``).

Every table file gets the metadata-file policy before it is opened (``common.metadata_refusal``):
one that links out of its source (``root``) or is not a regular file raises ``MetadataRefused``,
which the reader turns into the file's one reject row. A parquet file is opened through
``open_regular`` (a FIFO swapped in later cannot block); a SQLite row or value over 16 MiB is an
error naming the file, not an unbounded read (``SQLITE_LIMIT_LENGTH``); DuckDB reads within its
``memory_limit``.

SQLite goes through ``sqlite3`` rather than DuckDB: DuckDB reads SQLite only through its
``sqlite_scanner`` extension, which it downloads from extensions.duckdb.org at first use, so a build
on a machine without that network access (or a cluster behind a proxy) would fail there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..storage import SourceStorage, is_remote, storage_or_default
from .common import METADATA_LINE_MAX_BYTES, check_metadata_file, open_regular
from .mapping import Column

BATCH = 4096


class TableError(ValueError):
    """A metadata file that cannot be opened or read; the message is one line naming it."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


# ---------------------------------------------------------------- parquet


class ParquetTable:
    """One parquet file, read by row group (ranged reads on a store)."""

    def __init__(
        self,
        path: str,
        storage: SourceStorage | None = None,
        where: str | None = None,
        root: str | None = None,
    ):
        """``root``: the folder the file must stay in once links are resolved (default: its own)."""
        import pyarrow.parquet as pq

        self.path = path
        self.where = where or path.rpartition("/")[2]
        check_metadata_file(path, root, storage)  # MetadataRefused: a link out, a FIFO
        try:
            # pre_buffer=False: pyarrow's pre-buffering keeps every range it read for the life of the
            # reader (~70 MB per million rows of Danbooru metadata); pages are streamed instead
            self.file = pq.ParquetFile(
                storage_or_default(storage).open(path) if is_remote(path) else open_regular(path),
                pre_buffer=False,
                buffer_size=(8 << 20) if is_remote(path) else (1 << 20),
            )
            self.schema = self.file.schema_arrow
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet: one TableError line
            raise TableError(f"cannot read parquet metadata {path}: {_one_line(exc)}") from None

    def columns(self, skip: tuple[str, ...] = ()) -> list[Column]:
        return [
            Column(f.name, _arrow_type(f.type), sampler=lambda n=f.name: self.sample(n))
            for f in self.schema
            if f.name not in skip
        ]

    def count(self) -> int:
        return self.file.metadata.num_rows

    def sample(self, column: str) -> Any:
        """The first non-null value of a column, reading one row group at most."""
        for rg in range(min(self.file.num_row_groups, 4)):
            values = self.file.read_row_group(rg, columns=[column]).column(0)
            for value in values:
                if value.is_valid:
                    return value.as_py()
        return None

    def rows(self, columns: list[str], batch_size: int = BATCH) -> Iterator[dict[str, Any]]:
        """Every row (only ``columns``), in file order."""
        pos = 0
        try:
            for batch in self.file.iter_batches(batch_size=batch_size, columns=columns):
                for row in batch.to_pylist():
                    yield row
                    pos += 1
        except Exception as exc:  # noqa: BLE001 - pyarrow on an untrusted file, page by page: one TableError line
            raise TableError(f"parquet {self.path} is unreadable after row {pos}: {_one_line(exc)}") from None

    def row_groups(self, columns: list[str]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(row group, its rows) in file order: positions inside a group locate embedded images."""
        for rg in range(self.file.num_row_groups):
            try:
                table = self.file.read_row_group(rg, columns=columns)
            except Exception as exc:  # noqa: BLE001 - pyarrow on an untrusted file: one TableError line
                raise TableError(
                    f"parquet {self.path}: row group {rg} is unreadable: {_one_line(exc)}"
                ) from None
            yield rg, table.to_pylist()


def _arrow_type(type_: Any) -> str:
    text = str(type_)
    return re.sub(r"<(element|item): ", "<", text)


# ---------------------------------------------------------------- SQLite / DuckDB


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _head(path: str, size: int) -> bytes:
    try:
        with open_regular(path) as fh:  # a FIFO named like a database is never opened
            return fh.read(size)
    except OSError:
        return b""


def is_sqlite(path: str) -> bool:
    return _head(path, 16) == _SQLITE_MAGIC


def is_duckdb(path: str) -> bool:
    return _head(path, 12)[8:12] == b"DUCK"


def _sqlite_type(declared: str) -> str:
    """SQLite's type affinity rules (declared types are only hints in SQLite)."""
    d = declared.upper()
    if "INT" in d:
        return "int64"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return "string"
    if "BLOB" in d or not d:
        return "any"
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return "double"
    return "numeric"


def _duckdb_type(declared: str) -> str:
    d = declared.upper()
    if d.endswith("[]"):
        inner = _duckdb_type(d[:-2])
        return f"list<{inner}>"
    if d.startswith("STRUCT"):
        return "struct<" + d[7:-1].lower() + ">"
    if d in ("VARCHAR", "TEXT", "STRING") or d.startswith("VARCHAR"):
        return "string"
    if d in ("BOOLEAN", "BOOL"):
        return "bool"
    if "INT" in d:
        return "int64"
    if d in ("DOUBLE", "FLOAT", "REAL") or d.startswith("DECIMAL"):
        return "double"
    return d.lower()


class Database:
    """A SQLite or DuckDB file opened read-only; ``tables()`` and row streams of one table."""

    def __init__(self, path: str, engine: str, root: str | None = None):
        """``root``: the folder the file must stay in once links are resolved (default: its own)."""
        if is_remote(path):
            raise TableError(
                f"{path}: {engine} metadata must be a local file (download it; the images may stay on the store)"
            )
        self.path = path
        self.engine = engine
        check_metadata_file(path, root)  # MetadataRefused: a link out, a FIFO (sqlite would block on it)
        try:
            if engine == "sqlite":
                import sqlite3
                from urllib.parse import quote

                # immutable: never create -wal / -shm files beside a dump on a read-only disk
                self.conn = sqlite3.connect(f"file:{quote(path)}?mode=ro&immutable=1", uri=True)
                # a row or value past this is "string or blob too big", never a gigabyte in memory
                self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, METADATA_LINE_MAX_BYTES)
                self.conn.execute("PRAGMA temp_store = FILE")  # a sort spills to disk, not memory
            else:
                import duckdb

                self.conn = duckdb.connect(
                    path, read_only=True, config={"memory_limit": "512MB", "threads": 2}
                )
            self.tables()
        except TableError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite3/duckdb on an untrusted file (their own Error trees, MemoryError...): one TableError line
            raise TableError(f"cannot open {engine} database {path}: {_one_line(exc)}") from None

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except Exception as exc:  # noqa: BLE001 - sqlite3/duckdb on an untrusted file (also OverflowError, UnicodeDecodeError): one TableError line
            raise TableError(f"{self.engine} database {self.path}: {_one_line(exc)}") from None

    def tables(self) -> list[str]:
        if self.engine == "sqlite":
            rows = self._query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        else:
            rows = self._query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
            )
        return [r[0] for r in rows]

    def columns(self, table: str) -> list[Column]:
        if self.engine == "sqlite":
            info = self._query(f"PRAGMA table_info({_quote(table)})")
            cols = [(r[1], _sqlite_type(r[2] or "")) for r in info]
        else:
            info = self._query(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                (table,),
            )
            cols = [(r[0], _duckdb_type(r[1])) for r in info]
        out = []
        for name, type_ in cols:
            if type_ in ("any", "numeric"):  # no declared type: the values say
                type_ = _value_type(self.sample(table, name))
            out.append(Column(name, type_, sampler=lambda n=name: self.sample(table, n)))
        return out

    def has_index_on(self, table: str, column: str) -> bool:
        if self.engine != "sqlite":
            return True  # DuckDB sorts with bounded memory (memory_limit), spilling to disk
        for idx in self._query(f"PRAGMA index_list({_quote(table)})"):
            first = self._query(f"PRAGMA index_info({_quote(idx[1])})")
            if first and first[0][2] == column:
                return True
        return False

    def sample(self, table: str, column: str) -> Any:
        rows = self._query(
            f"SELECT {_quote(column)} FROM {_quote(table)} WHERE {_quote(column)} IS NOT NULL LIMIT 1"
        )
        return rows[0][0] if rows else None

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {_quote(table)}")[0][0])

    def stream(self, sql: str, batch_size: int = BATCH) -> Iterator[tuple]:
        """Rows of a query, fetched ``batch_size`` at a time (never the whole result)."""
        try:
            cur = self.conn.execute(sql)
            while True:
                batch = cur.fetchmany(batch_size)
                if not batch:
                    return
                yield from batch
        except Exception as exc:  # noqa: BLE001 - sqlite3/duckdb on an untrusted file, batch by batch: one TableError line
            raise TableError(f"{self.engine} database {self.path}: {_one_line(exc)}") from None

    def rows(self, table: str, columns: list[str], order: str | None = None) -> Iterator[dict[str, Any]]:
        sql = f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(table)}"
        if order:
            sql += f" ORDER BY {_quote(order)}"
        for values in self.stream(sql):
            yield dict(zip(columns, values, strict=True))


def _value_type(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "double"
    if isinstance(value, bytes | bytearray):
        return "binary"
    return "null" if value is None else type(value).__name__


__all__ = ["Database", "ParquetTable", "TableError", "is_duckdb", "is_sqlite"]
