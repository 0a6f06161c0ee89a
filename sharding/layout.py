"""The one owner of OUT's layout: every file name inside a build, and how it is written and read.

OUT is a local path, ``file://`` URL or object-store URL (``s3://``, ``gs://``, anything pyarrow
or fsspec opens). Everything goes through one ``pyarrow.fs`` filesystem interface, because pyarrow
already reads the manifest and the shards (parquet, ranged reads) and wraps any fsspec filesystem.
``s3://`` is s3fs behind that interface (botocore reads the standard ``AWS_*`` variables, endpoint
included; see ``_s3``); ``gs://`` and the rest are pyarrow's own clients, else fsspec's. A local
OUT keeps the old behaviour byte for byte (temp name, fsync, rename).

Commit rule: a file is complete or absent. Locally a write goes to a temporary name, is fsynced and
renamed. Object stores have no rename, but an object only appears once its upload is complete (a
single PUT or a completed multipart upload), so a write is one upload of the whole bytes. Every
phase writes its outputs first and its marker (a state file, ``build.json``) after them, so a
build killed at any moment resumes from the last finished unit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Public names inside OUT (the output contract, docs/output.md).
BUILD_JSON = "build.json"
MANIFEST = "manifest.parquet"
REJECTS = "rejects.parquet"
SHARDS_JSON = "shards.json"
PLAN = "plan.parquet"
SCAN_DIR = "scan"
SHARDS_DIR = "shards"
WEIGHTS_DIR = "weights"  # weight versions: weights/<name>.parquet (sharding/weights.py)
WEIGHTS_ACTIVE = "active.json"  # weights/active.json: {"name": NAME}, the version readers take by default
REJECTS_HISTORY = "rejects_history.parquet"  # reject rows a --retry superseded
DATASET_CARD = "README.md"  # an HF dataset card: the shards and their exact features (sharding/samplejson.py)
# Private progress (may change between versions).
STATE_DIR = "_state"
COMMITTED_COPY = (
    "build.json"  # _state/build.json: the copy of build.json written just before it (sharding/integrity.py)
)
TMP_MARK = ".tmp-"
READ_BLOCK = 1 << 20


# Every parquet file of OUT carries a CRC per page and every read checks it: a flipped bit in a
# table is an error naming the file, never a silently different value (sharding/integrity.py).
PARQUET_WRITE = {"compression": "zstd", "write_page_checksum": True}


class StorageError(ValueError):
    """OUT or a source cannot be opened as given; the message says which and why (never a secret)."""


class DamagedFileError(StorageError):
    """A file of OUT exists but is not what it should be: cut, flipped, garbage, another table's
    bytes or the wrong shape. ``path`` is the file as the user would write it."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path} is damaged ({why})")
        self.path, self.why = path, why


def is_content_fault(exc: BaseException) -> bool:
    """An error reading a file that is about its bytes (a bad parquet page, a cut stream), not about
    reaching it: pyarrow raises plain ``OSError`` without errno for those, while missing files,
    permissions and network faults are subclasses (FileNotFoundError, PermissionError, ...)."""
    return type(exc) is OSError and exc.errno is None


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then what caused it: ``__cause__``, ``__context__`` and the ``cause`` a Ray task error wraps."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


# botocore's names (matched by class name, so this module needs no botocore import)
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
                "ServerDisconnectedError", "ConnectionClosedError", "ClientOSError")  # fmt: skip


def storage_fault(exc: BaseException) -> str | None:
    """One line for an object-store fault anywhere in ``exc``'s chain (no credentials, access denied,
    a missing bucket, an endpoint that does not answer); None when it is not one. Never the secret:
    only the error's class and the store's own first line (which names no key)."""
    for err in causes(exc):
        name = type(err).__name__
        if name in _NO_CREDENTIALS:
            return (
                f"no usable credentials for the store ({first_line(err)}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or --storage-option key=... secret=..."
            )
        if isinstance(err, PermissionError) and err.errno is None:  # s3fs: 403 Forbidden, no errno
            return (
                f"the store refused access ({first_line(err)}): check the credentials (a wrong key or "
                "secret reads as Forbidden) and the bucket's policy"
            )
        if isinstance(err, FileNotFoundError) and err.errno is None and "bucket" in str(err).lower():
            return f"the bucket does not exist ({first_line(err)}); create it or fix the URL"
        if name in _UNREACHABLE or (isinstance(err, ConnectionError) and err.errno is None):
            return (
                f"the store does not answer ({first_line(err)}): is the endpoint (AWS_ENDPOINT_URL / "
                "--storage-option endpoint_url) up? Finished work is kept: run the same command again"
            )
        if name == "ClientError":  # any other refusal of the S3 API, e.g. InvalidAccessKeyId
            return f"the store refused the request ({first_line(err)})"
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most 300 characters."""
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:300]


# ---------------------------------------------------------------- filesystem


def is_url(location: str) -> bool:
    return "://" in location


def open_filesystem(
    location: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URL; ``storage_options`` configure the client."""
    options = dict(storage_options or {})
    if not is_url(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    scheme = location.split("://", 1)[0].lower()
    if scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(location.split("://", 1)[1] or "/")
    if scheme == "s3":
        return _s3(location, options)
    if not options:
        try:
            fs, path = pafs.FileSystem.from_uri(location)
            return fs, path.rstrip("/")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
            pass
    return _fsspec(location, options)


# pyarrow's S3FileSystem spellings of s3fs options, so either habit works on the command line.
_S3_ALIASES = {
    "access_key": "key",
    "secret_key": "secret",
    "session_token": "token",
    "endpoint_override": "endpoint_url",
}


_S3_ENV = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "key": ("AWS_ACCESS_KEY_ID",),
    "secret": ("AWS_SECRET_ACCESS_KEY",),
    "token": ("AWS_SESSION_TOKEN",),
}


def _s3(location: str, options: dict[str, Any]) -> tuple[pafs.FileSystem, str]:
    """s3fs behind pyarrow.fs: botocore reads every ``AWS_*`` variable (``AWS_ENDPOINT_URL`` included).

    Not pyarrow's own S3 client: it ignores ``AWS_ENDPOINT_URL`` and its multipart completion
    fails against S3-compatible servers (moto) that s3fs handles.
    """
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        key = _S3_ALIASES.get(key, key)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if key in ("region", "region_name"):
            kwargs.setdefault("client_kwargs", {})["region_name"] = value
        else:
            kwargs[key] = value
    # Settings given as AWS_* variables here travel with the (pickled) filesystem to every Ray
    # worker, so only the driver's machine needs them; profiles and instance roles resolve per node.
    for key, names in _S3_ENV.items():
        value = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if value and key not in kwargs:
            kwargs[key] = value
    region = next((os.environ[n] for n in ("AWS_REGION", "AWS_DEFAULT_REGION") if os.environ.get(n)), None)
    if region:
        kwargs.setdefault("client_kwargs", {}).setdefault("region_name", region)
    # Another process (a worker) may have written since we listed: never answer from a stale listing.
    kwargs.setdefault("use_listings_cache", False)
    return _fsspec(location, kwargs)


def _fsspec(location: str, options: dict[str, Any]) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(location, **options)
    except ImportError as exc:
        raise StorageError(f"cannot open {_redact(location)}: {first_line(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise StorageError(f"cannot open {_redact(location)}: {first_line(exc)}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def _redact(location: str) -> str:
    """A URL without any ``user:password@`` part, for messages."""
    scheme, sep, rest = location.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def parse_storage_options(items: list[str] | None) -> dict[str, str]:
    """``--storage-option KEY=VALUE`` (repeatable) -> dict; a bad item is a one-line StorageError."""
    options: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise StorageError(f"--storage-option wants KEY=VALUE, got {item.split('=')[0]!r}")
        options[key.strip()] = value
    return options


# ---------------------------------------------------------------- local atomic writes


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to local ``path`` so that a crash leaves the old file or the new one, never half."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # disk full, read-only, interrupted: leave no half file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


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
        self.out = self.root if self.local else _redact(out).rstrip("/")

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
        """State of append / retry ``number`` (pipelines/increment.py)."""
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

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        """A parquet file of OUT, every page's CRC checked; DamagedFileError naming it when its bytes
        are at fault (cut, flipped, not parquet, another table without these columns)."""
        # An fsspec store (s3fs behind pyarrow's PyFileSystem) is read on this thread: pre-buffered
        # reads run on Arrow's I/O threads, which call into Python and can abort the process at
        # exit ("terminate called without an active exception", apache/arrow#39162, #34314).
        try:
            return pq.read_table(
                path, columns=columns, filesystem=self.fs, pre_buffer=self.local,
                page_checksum_verification=True,
            )  # fmt: skip
        except OSError as exc:
            if is_content_fault(exc):
                raise self.damaged(path, exc) from None
            raise
        except pa.ArrowException as exc:  # ArrowInvalid (not parquet, missing column), ...
            raise self.damaged(path, exc) from None

    def parquet_file(self, path: str) -> pq.ParquetFile:
        """An open ParquetFile (ranged reads on a store) whose pages are CRC-checked as they are read;
        DamagedFileError when its footer cannot be read."""
        fh = self.fs.open_input_file(path)
        try:
            return pq.ParquetFile(fh, page_checksum_verification=True)
        except OSError as exc:
            fh.close()
            if is_content_fault(exc):
                raise self.damaged(path, exc) from None
            raise
        except pa.ArrowException as exc:
            fh.close()
            raise self.damaged(path, exc) from None

    def parquet_rows(self, path: str) -> int:
        with self.fs.open_input_file(path) as fh:
            try:
                return pq.read_metadata(fh).num_rows
            except OSError as exc:
                if is_content_fault(exc):
                    raise self.damaged(path, exc) from None
                raise
            except pa.ArrowException as exc:
                raise self.damaged(path, exc) from None

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
        except Exception as exc:
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
        if self.local:
            atomic_write_bytes(path, data)
            return
        # One upload of the whole bytes: pyarrow's S3 stream completes its (multipart) upload on
        # close and aborts it on error, so a killed writer leaves no object behind.
        with self.fs.open_output_stream(path) as fh:
            fh.write(data)

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
    "BUILD_JSON", "MANIFEST", "PLAN", "REJECTS", "REJECTS_HISTORY", "SCAN_DIR", "SHARDS_DIR", "SHARDS_JSON",
    "STATE_DIR", "WEIGHTS_ACTIVE", "WEIGHTS_DIR", "PARQUET_WRITE",
    "DamagedFileError", "Layout", "StorageError", "atomic_write_bytes", "causes", "first_line", "fsync_dir",
    "is_content_fault", "is_url", "json_bytes", "open_filesystem", "parquet_bytes", "parse_storage_options",
    "storage_fault",
]  # fmt: skip
