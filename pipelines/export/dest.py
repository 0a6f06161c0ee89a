"""DEST, the folder an export writes: its own file names, and how files get there.

DEST is a local path or a URL (``s3://``, ``gs://``, ...), through the same filesystem layer as OUT
(``sharding.layout``). A file is complete or absent: locally it is written under a temporary name
and renamed, on a store it is one upload. Per-sample files are not fsynced (millions of them, and
a kill never loses what was written); a shard's marker lists its files with their sizes, and a
re-run trusts a local marker only when they are all there at those sizes (``intact``), so even a
machine crash that leaves a renamed file empty only costs that shard (docs/export.md, "Resume").

Names here are DEST's (the export's contract); each target adds its own folders and config file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from groundwork.files import TMP_MARK, atomic_file
from sharding.layout import Layout, StorageError, json_bytes, parquet_bytes

EXPORT_VERSION = 1  # DEST's own contract (docs/export.md): recorded in its request and export.json
EXPORT_JSON = "export.json"  # written last: the export is complete when it says so
SAMPLES = "samples.parquet"  # one row per manifest sample: its fate, drawing, repeats and files
README = "README.md"  # the training command (for diffusers also the HF dataset card)
STATE_DIR = "_export"  # resume bookkeeping (not part of the contract)


class Dest:
    """DEST's files, relative paths in, complete-or-absent writes out."""

    def __init__(self, location: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.io = Layout(location, storage_options)
        self.local = self.io.local
        self.out = self.io.out  # what the user sees: absolute path or URL (no credentials)

    def path(self, rel: str) -> str:
        return self.io.path(*rel.split("/"))

    def display(self, rel: str = "") -> str:
        return self.io.display(self.path(rel)) if rel else self.out

    # ---------------------------------------------------------------- private progress

    @property
    def request(self) -> str:
        return f"{STATE_DIR}/request.json"

    def marker(self, shard: str) -> str:
        """Written once every file of OUT's ``shard`` is in DEST."""
        return f"{STATE_DIR}/shards/{shard.replace('/', '__')}.json"

    def part(self, shard: str) -> str:
        """The samples.parquet rows of OUT's ``shard``."""
        return f"{STATE_DIR}/parts/{shard.replace('/', '__')}.parquet"

    # ---------------------------------------------------------------- reading

    def exists(self, rel: str) -> bool:
        return self.io.exists(self.path(rel))

    def read_json(self, rel: str) -> Any:
        return self.io.read_json(self.path(rel))

    def read_parquet(self, rel: str) -> pa.Table:
        return self.io.read_parquet(self.path(rel))

    def is_empty(self) -> bool:
        return self.io.is_empty()

    # ---------------------------------------------------------------- writing

    def write_file(self, rel: str, data: bytes) -> None:
        """A per-sample file: complete or absent (temp name + rename locally), synced with its shard."""
        if not self.local:
            self.io.write_bytes(self.path(rel), data)
            return
        with atomic_file(self.path(rel), durable=False) as fh:
            fh.write(data)

    def intact(self, sizes: Mapping[str, int]) -> bool:
        """Every file of ``sizes`` (relative path -> bytes) is there at its size. On a store an
        object exists only once its upload completed, so only a local DEST is checked."""
        if not self.local:
            return True
        for rel, size in sizes.items():
            try:
                if os.stat(self.path(rel)).st_size != size:
                    return False
            except OSError:
                return False
        return True

    def write_bytes(self, rel: str, data: bytes) -> None:
        """A marker or a config file: complete or absent, fsynced."""
        self.io.write_bytes(self.path(rel), data)

    def write_json(self, rel: str, data: Any) -> None:
        self.write_bytes(rel, json_bytes(data))

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        self.write_bytes(rel, parquet_bytes(table))

    @contextlib.contextmanager
    def open_output(self, rel: str) -> Iterator[Any]:
        """A large file written as a stream (a draw list): appears complete or not at all."""
        with atomic_file(self.path(rel), self.io.fs) as fh:
            yield fh

    def remove_temp_files(self) -> int:
        """Delete half-written files of a killed run (local only: a store never holds a partial
        object). A walk, folder by folder: DEST may hold millions of files, never listed at once."""
        if not self.local or not os.path.isdir(self.io.root):
            return 0
        removed = 0
        for root, _, names in os.walk(self.io.root):
            for name in names:
                if TMP_MARK in name:
                    os.remove(os.path.join(root, name))
                    removed += 1
        return removed


__all__ = ["EXPORT_JSON", "README", "SAMPLES", "STATE_DIR", "Dest", "StorageError"]
