"""The one owner of OUT's layout: where every file of a build lies, and how it is written and read.

OUT is a local path, ``file://`` URL or object-store URL, opened through the one filesystem layer
(``groundwork.filesystems``): pyarrow already reads the manifest and the shards (parquet, ranged
reads) and wraps any fsspec filesystem. OUT's public file names are the contract's
(``groundwork.contract``); the private progress files under ``_state/`` are named here.

Commit rule (``groundwork.files``): a file is complete or absent: locally a temporary name, fsync,
rename, folder fsync; on an object store one complete upload. Every phase writes its outputs first
and its marker (a state file, ``build.json``) after them, so a build killed at any moment resumes
from the last finished unit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from groundwork.contract import (
    BUILD_JSON,
    DATASET_CARD,
    MANIFEST,
    PLAN,
    REJECTS,
    REJECTS_HISTORY,
    SCAN_DIR,
    SHARDS_DIR,
    SHARDS_JSON,
    WEIGHTS_ACTIVE,
    WEIGHTS_DIR,
)
from groundwork.files import READ_BLOCK, TMP_MARK, json_bytes, write_atomic
from groundwork.filesystems import (
    StorageError,
    causes,
    first_line,
    is_content_fault,
    is_url,
    open_filesystem,
    parse_storage_options,
    redact_url,
    storage_fault,
)

# Private progress (may change between versions).
STATE_DIR = "_state"
# _state/build.json: the copy of build.json written just before it (sharding/integrity.py)
COMMITTED_COPY = BUILD_JSON

# Every parquet file of OUT carries a CRC per page and every read checks it: a flipped bit in a
# table is an error naming the file, never a silently different value (sharding/integrity.py).
PARQUET_WRITE = {"compression": "zstd", "write_page_checksum": True}


class DamagedFileError(StorageError):
    """A file of OUT exists but is not what it should be: cut, flipped, garbage, another table's
    bytes or the wrong shape. ``path`` is the file as the user would write it."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path} is damaged ({why})")
        self.path, self.why = path, why


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_WRITE)
    return buf.getvalue()


# ---------------------------------------------------------------- the layout


class Layout:
    """OUT: its file names (the public ones are the output contract, docs/output.md) and its I/O.

    Paths returned here are paths inside ``fs`` (for a local OUT: absolute local paths). A Layout
    pickles (Ray tasks and actors get one), so every node writes through the same filesystem.
    """

    def __init__(
        self,
        out: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        fs: pafs.FileSystem | None = None,
        root: str | None = None,
    ) -> None:
        if fs is None:
            fs, root = open_filesystem(out, storage_options)
        self.fs: pafs.FileSystem = fs
        self.root: str = (root or "").rstrip("/") or "/"
        self.local = isinstance(fs, pafs.LocalFileSystem)
        # What the user sees: the absolute path for a local OUT, else the URL (without credentials).
        self.out = self.root if self.local else redact_url(out).rstrip("/")

    def __repr__(self) -> str:  # never the filesystem: its options may hold credentials
        return f"Layout({self.out!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and (self.out, type(self.fs)) == (other.out, type(other.fs))

    def __hash__(self) -> int:
        return hash(self.out)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if parts else self.root

    def rel(self, path: str) -> str:
        """``path`` relative to OUT."""
        return path[len(self.root.rstrip("/")) + 1 :] if path.startswith(self.root) else path

    def display(self, path: str) -> str:
        """``path`` as the user would write it (local path or URL), for messages."""
        return path if self.local else f"{self.out}/{self.rel(path)}"

    # public
    @property
    def build_json(self) -> str:
        return self.path(BUILD_JSON)

    @property
    def scan_dir(self) -> str:
        return self.path(SCAN_DIR)

    def scan_part(self, chunk: int) -> str:
        return self.path(SCAN_DIR, f"part-{chunk:06d}.parquet")

    @property
    def plan(self) -> str:
        return self.path(PLAN)

    @property
    def manifest(self) -> str:
        return self.path(MANIFEST)

    @property
    def rejects(self) -> str:
        return self.path(REJECTS)

    @property
    def shards_json(self) -> str:
        return self.path(SHARDS_JSON)

    @property
    def weights_dir(self) -> str:
        return self.path(WEIGHTS_DIR)

    def weights_version(self, name: str) -> str:
        """Weight version ``name`` (checked by ``sharding.weights.check_name`` before it gets here)."""
        return self.path(WEIGHTS_DIR, f"{name}.parquet")

    @property
    def weights_active(self) -> str:
        return self.path(WEIGHTS_DIR, WEIGHTS_ACTIVE)

    @property
    def rejects_history(self) -> str:
        return self.path(REJECTS_HISTORY)

    @property
    def dataset_card(self) -> str:
        return self.path(DATASET_CARD)

    def shard(self, rel_path: str) -> str:
        """A shard tar; ``rel_path`` as in shards.json and the manifest (``shards/WxH/NNNNNN.tar``).

        OUT's own files are data too: a path that is absolute, uses ``..`` or lies outside
        ``shards/`` is refused (StorageError), never opened.
        """
        parts = rel_path.replace("\\", "/").split("/")
        if (
            not rel_path
            or rel_path.startswith("/")
            or (len(rel_path) > 1 and rel_path[1] == ":")
            or parts[0] != SHARDS_DIR
            or any(p in ("", ".", "..") for p in parts)
            or "://" in rel_path
        ):
            raise StorageError(
                f"shard path {rel_path[:200]!r} in OUT's files leaves {SHARDS_DIR}/ of OUT; refused"
            )
        return self.path(rel_path)

    # private progress
    @property
    def request(self) -> str:
        return self.path(STATE_DIR, "request.json")

    def records_part(self, chunk: int) -> str:
        return self.path(STATE_DIR, "records", f"part-{chunk:06d}.parquet")

    @property
    def enumerated(self) -> str:
        return self.path(STATE_DIR, "enumerated.json")

    @property
    def dedup_rejects(self) -> str:
        return self.path(STATE_DIR, "dedup_rejects.parquet")

    @property
    def early_rejects(self) -> str:
        """Scan and dedup rejects sorted by seq: written with the plan, merged with the late ones at the end."""
        return self.path(STATE_DIR, "early_rejects.parquet")

    def shard_state(self, shard: str) -> str:
        return self.path(STATE_DIR, "shards", shard.replace("/", "__") + ".json")

    @property
    def shard_states_dir(self) -> str:
        return self.path(STATE_DIR, "shards")

    @property
    def shards_dir(self) -> str:
        return self.path(SHARDS_DIR)

    def increment(self, number: int, *parts: str) -> str:
        """State of append / retry ``number`` (pipelines/build/base.py)."""
        return self.path(STATE_DIR, "increments", f"{number:06d}", *parts)

    @property
    def records_dir(self) -> str:
        return self.path(STATE_DIR, "records")

    @property
    def committed_copy(self) -> str:
        """``_state/build.json``: build.json as committed, written just before build.json itself."""
        return self.path(STATE_DIR, COMMITTED_COPY)

    # ------------------------------------------------------------ reading

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def size(self, path: str) -> int | None:
        """Bytes of the file at ``path``; None when it is missing."""
        info = self.fs.get_file_info(path)
        return None if info.type != pafs.FileType.File else int(info.size)

    def sizes(self, paths: list[str]) -> list[int | None]:
        """Sizes of many files in one listing call where the store allows it."""
        infos = self.fs.get_file_info(paths)
        return [None if i.type != pafs.FileType.File else int(i.size) for i in infos]

    def listed_sizes(self, folder: str) -> dict[str, int]:
        """Every file below ``folder`` with its size, from one (paginated) listing: on an object
        store one LIST request per 1000 files instead of one HEAD request per file."""
        selector = pafs.FileSelector(folder, allow_not_found=True, recursive=True)
        try:
            infos = self.fs.get_file_info(selector)
        except (NotADirectoryError, FileNotFoundError):
            infos = self.fs.get_file_info(selector)  # fsspec: the folder appeared between two calls
        return {i.path: int(i.size) for i in infos if i.type == pafs.FileType.File}

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as fh:
            return fh.read()

    def read_json(self, path: str) -> Any:
        """A JSON file of OUT; DamagedFileError naming it when its bytes are not JSON."""
        data = self.read_bytes(path)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
            why = "empty" if not data.strip() else f"not JSON: {first_line(exc)}"
            raise DamagedFileError(self.display(path), why) from None

    def damaged(self, path: str, exc: BaseException) -> DamagedFileError:
        """The DamagedFileError for a failed read of ``path`` whose bytes are at fault."""
        return DamagedFileError(self.display(path), f"not a readable parquet file: {first_line(exc)}")

    @contextlib.contextmanager
    def parquet_faults(self, path: str) -> Iterator[None]:
        """Around a read of parquet file ``path``: a fault of its bytes (cut, flipped, not parquet,
        another table without these columns) becomes a DamagedFileError naming it; a fault reaching
        it (missing, refused, the network) stays what it is."""
        try:
            yield
        except OSError as exc:
            if is_content_fault(exc):
                raise self.damaged(path, exc) from None
            raise
        except pa.ArrowException as exc:  # ArrowInvalid (not parquet, missing column), ...
            raise self.damaged(path, exc) from None

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """A parquet file of OUT, every page's CRC checked; DamagedFileError naming it when its bytes
        are at fault (``parquet_faults``)."""
        # An fsspec store (s3fs behind pyarrow's PyFileSystem) is read on this thread: pre-buffered
        # reads run on Arrow's I/O threads, which call into Python and can abort the process at
        # exit ("terminate called without an active exception", apache/arrow#39162, #34314).
        with self.parquet_faults(path):
            return pq.read_table(
                path, columns=columns, filesystem=self.fs, pre_buffer=self.local,
                page_checksum_verification=True,
            )  # fmt: skip

    def parquet_file(self, path: str) -> pq.ParquetFile:
        """An open ParquetFile (ranged reads on a store) whose pages are CRC-checked as they are read;
        DamagedFileError when its footer cannot be read."""
        fh = self.fs.open_input_file(path)
        try:
            with self.parquet_faults(path):
                return pq.ParquetFile(fh, page_checksum_verification=True)
        except BaseException:  # noqa: BLE001 - close the handle, then re-raise
            fh.close()
            raise

    def parquet_rows(self, path: str) -> int:
        with self.fs.open_input_file(path) as fh, self.parquet_faults(path):
            return pq.read_metadata(fh).num_rows

    def open_input_file(self, path: str):
        """A seekable handle (ranged reads on object stores)."""
        return self.fs.open_input_file(path)

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(path) as fh:
            while block := fh.read(READ_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    def is_empty(self) -> bool:
        """True when OUT does not exist or holds nothing."""
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            return True
        if info.type == pafs.FileType.File:
            return False
        return not self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True, recursive=False))

    def files(self, folder: str) -> Iterator[str]:
        """Every file below ``folder`` (recursive), as paths inside the filesystem."""
        yield from self.listed_sizes(folder)

    def probe(self) -> None:
        """StorageError with one line when OUT's store cannot be reached, refuses these credentials,
        or has no such bucket (so a command tells an outage from an unfinished build). A local OUT
        and a store that answers pass; costs one or two requests."""
        if self.local:
            return
        try:
            if self.fs.get_file_info(self.root).type != pafs.FileType.NotFound:
                return
            scheme = self.out.split("://", 1)[0].lower()
            bucket = self.root.strip("/").split("/", 1)[0]
            if scheme in ("s3", "s3a", "gs", "gcs") and bucket and bucket != self.root.strip("/"):
                if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise StorageError(
                        f"{self.out}: the bucket {bucket!r} does not exist; create it or fix the URL"
                    )
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store fault becomes one StorageError line; anything else is re-raised
            why = storage_fault(exc)
            if why is None:
                raise
            raise StorageError(f"{self.out}: {why}") from None

    # ------------------------------------------------------------ writing

    def ensure_root(self) -> None:
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Commit ``data`` at ``path``: complete or absent, never half (see the module doc)."""
        write_atomic(path, data, self.fs)

    def write_json(self, path: str, data: Any) -> None:
        self.write_bytes(path, json_bytes(data))

    def write_parquet(self, path: str, table: pa.Table) -> None:
        self.write_bytes(path, parquet_bytes(table))

    def remove(self, path: str) -> None:
        self.fs.delete_file(path)

    def remove_temp_files(self) -> int:
        """Delete leftovers of killed local writers (object stores never hold partial objects)."""
        if not self.local or not os.path.isdir(self.root):
            return 0
        removed = 0
        for path in self.files(self.root):
            if TMP_MARK in os.path.basename(path):
                os.remove(path)
                removed += 1
        return removed


__all__ = [
    "COMMITTED_COPY", "PARQUET_WRITE", "STATE_DIR", "DamagedFileError", "Layout", "parquet_bytes",
    # the contract's names and the filesystem layer, as OUT's users reach them
    "BUILD_JSON", "DATASET_CARD", "MANIFEST", "PLAN", "REJECTS", "REJECTS_HISTORY", "SCAN_DIR", "SHARDS_DIR",
    "SHARDS_JSON", "WEIGHTS_ACTIVE", "WEIGHTS_DIR", "StorageError", "causes", "first_line", "is_content_fault",
    "is_url", "json_bytes", "open_filesystem", "parse_storage_options", "storage_fault",
]  # fmt: skip
