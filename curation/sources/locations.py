"""Reading the locations of members that are not plain byte ranges: ``zip://`` (a zip member:
its local header, then its data decompressed), ``tgz://`` (a member of a .tar.gz: decompressed
from the archive's start) and ``parquet://`` (an image embedded in a parquet row).

``curation.fetch.read_location`` hands these over; each checks ``max_bytes`` before decompressing
(from the size the listing recorded) and decompresses at most ``max_bytes`` + 1 bytes, so a zip
bomb stops at the cap. Errors are OSError (the scan's ``missing_file``) or DecodeReject.
"""

from __future__ import annotations

import bz2
import gzip
import io
import struct
import threading
import zlib
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote

from ..address import unquote_path
from ..decode import DecodeReject
from ..storage import is_remote, storage_or_default
from .common import open_regular

ZIP_SCHEME, TGZ_SCHEME, PARQUET_SCHEME = "zip://", "tgz://", "parquet://"
SCHEMES = (ZIP_SCHEME, TGZ_SCHEME, PARQUET_SCHEME)


def read(location: str, max_bytes: int, storage: Any = None) -> bytes:
    if location.startswith(ZIP_SCHEME):
        return _read_zip(location, max_bytes, storage)
    if location.startswith(TGZ_SCHEME):
        return _read_tgz(location, max_bytes, storage)
    return _read_parquet(location, max_bytes, storage)


def _split(location: str, scheme: str, fields: int) -> tuple[str, list[str], str]:
    """``scheme<quoted path>#f1:f2:...:<quoted name>`` -> (path, fields, name)."""
    body = location[len(scheme) :]
    path, sep, frag = body.partition("#")
    parts = frag.split(":", fields)
    if not sep or len(parts) != fields + 1:
        raise OSError(f"malformed location {location[:200]!r}")
    return unquote_path(path), parts[:fields], unquote(parts[fields], errors="replace")


def _ints(values: list[str], location: str) -> list[int]:
    if not all(v.isdigit() for v in values):
        raise OSError(f"malformed location {location[:200]!r}")
    return [int(v) for v in values]


def _range(path: str, offset: int, size: int, storage: Any) -> bytes:
    if is_remote(path):
        return storage_or_default(storage).read_range(path, offset, size)
    with open_regular(path) as fh:  # a FIFO swapped in since the listing cannot block
        fh.seek(offset)
        return fh.read(size)


def _cap(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise DecodeReject("too_many_bytes", f"{what}: {size} bytes > {max_bytes} (scan.max_bytes)")


# ---------------------------------------------------------------- zip


def _read_zip(location: str, max_bytes: int, storage: Any) -> bytes:
    path, fields, name = _split(location, ZIP_SCHEME, 5)
    header_offset, csize, size, method, crc = _ints(fields, location)
    _cap(size, max_bytes, f"zip member {name!r}")
    head = _range(path, header_offset, 30, storage)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise OSError(f"zip member {name!r} of {path}: no local header at byte {header_offset}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    data = _range(path, header_offset + 30 + name_len + extra_len, csize, storage)
    if len(data) != csize:
        raise OSError(f"zip member {name!r} of {path} is truncated ({len(data)} of {csize} bytes)")
    if method == 0:
        out = data
    elif method == 8:
        d = zlib.decompressobj(-15)
        out = d.decompress(data, max_bytes + 1)
    elif method == 12:
        out = bz2.BZ2Decompressor().decompress(data, max_bytes + 1)
    else:
        raise DecodeReject("decode_error", f"zip member {name!r}: compression method {method} is not read")
    if len(out) > max_bytes:
        raise DecodeReject(
            "too_many_bytes", f"zip member {name!r} inflates past {max_bytes} bytes (scan.max_bytes)"
        )
    if len(out) != size or zlib.crc32(out) != crc:
        raise OSError(
            f"zip member {name!r} of {path} is damaged (size or CRC differs from the zip's directory)"
        )
    return out


# ---------------------------------------------------------------- tar.gz

# One forward-only decompressing reader per archive and process (the last two used): the scan reads
# an archive's members in order, so each read continues where the last one stopped.
_CURSORS: OrderedDict[str, gzip.GzipFile] = OrderedDict()
_LOCK = threading.Lock()


def _cursor(path: str, storage: Any) -> gzip.GzipFile:
    gz = _CURSORS.pop(path, None)
    if gz is None:
        if is_remote(path):
            raw = io.BufferedReader(storage_or_default(storage).open(path), buffer_size=8 << 20)
        else:
            raw = open_regular(path)  # kept open in the cursor cache
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
    _CURSORS[path] = gz
    while len(_CURSORS) > 2:
        _, old = _CURSORS.popitem(last=False)
        old.close()
        old.fileobj.close()  # type: ignore[union-attr]
    return gz


def _read_tgz(location: str, max_bytes: int, storage: Any) -> bytes:
    path, fields, name = _split(location, TGZ_SCHEME, 2)
    offset, size = _ints(fields, location)
    _cap(size, max_bytes, f"member {name!r}")
    with _LOCK:
        try:
            gz = _cursor(path, storage)
            gz.seek(offset)  # forward: decompress and skip; backward: from the start again
            data = gz.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            _CURSORS.pop(path, None)
            raise OSError(f"member {name!r} of {path}: {type(exc).__name__}: {exc}") from None
    if len(data) != size:
        raise OSError(f"member {name!r} of {path} is truncated ({len(data)} of {size} bytes)")
    return data


# ---------------------------------------------------------------- parquet with embedded images

# The last row group's image column read in this process (a scan chunk's rows share row groups).
_GROUP: dict[str, Any] = {}


def parquet_location(path: str, row_group: int, row: int, column: str) -> str:
    from ..address import quote_path

    return f"{PARQUET_SCHEME}{quote_path(path)}#{row_group}:{row}:{column}"


def _read_parquet(location: str, max_bytes: int, storage: Any) -> bytes:
    path, fields, column = _split(location, PARQUET_SCHEME, 2)
    row_group, row = _ints(fields, location)
    key = (path, row_group, column)
    with _LOCK:
        if _GROUP.get("key") != key:
            _GROUP.clear()
            import pyarrow.parquet as pq

            try:
                source = storage_or_default(storage).open(path) if is_remote(path) else open_regular(path)
                with source:
                    values = pq.ParquetFile(source).read_row_group(row_group, columns=[column]).column(0)
            except OSError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow on an untrusted file (ArrowInvalid, ArrowNotImplementedError, ...): one OSError line
                raise OSError(f"{path}: row group {row_group}: {type(exc).__name__}: {exc}"[:300]) from None
            _GROUP.update(key=key, values=values)
        values = _GROUP["values"]
    if row >= len(values):
        raise OSError(f"{path}: row group {row_group} has no row {row}")
    value = values[row].as_py()
    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None:
        raise OSError(f"{path}: row {row} of row group {row_group} has no image bytes in {column!r}")
    if not isinstance(data, bytes | bytearray):
        raise OSError(f"{path}: {column!r} of row {row} is {type(data).__name__}, not bytes")
    _cap(len(data), max_bytes, f"embedded image {column!r}")
    return bytes(data)


__all__ = ["PARQUET_SCHEME", "SCHEMES", "TGZ_SCHEME", "ZIP_SCHEME", "parquet_location", "read"]
