"""The bytes of an input at its location (``curation.address``): a local file, a URL, a member of
a tar, zip, tar.gz or parquet read in place, each with the file-type check and the byte cap before
anything is read.
"""

from __future__ import annotations

import os
from typing import Any

from .address import FILE_SCHEME, TAR_SCHEME, parse_tar_location, unquote_path
from .decode import DEFAULT_MAX_BYTES, DecodeReject, check_regular, read_bytes
from .storage import is_remote, storage_or_default


def read_location(location: str, max_bytes: int = DEFAULT_MAX_BYTES, storage: Any = None) -> bytes:
    """The bytes of an input: a file path or URL, or a member inside an uncompressed tar (read in place).

    URLs (``s3://...``, also as a tar's path) are read through ``storage`` (a
    ``curation.storage.SourceStorage``; default: the ``AWS_*`` variables alone); a tar member is
    one ranged read of its bytes. Raises OSError when the bytes cannot be read in full (the scan
    turns it into a reject), and DecodeReject when the input is not a regular file or is over
    ``max_bytes``.
    """
    if location.startswith(FILE_SCHEME):
        return read_bytes(unquote_path(location[len(FILE_SCHEME) :]), max_bytes)
    if location.startswith(("zip://", "tgz://", "parquet://")):  # archive members (curation/sources)
        from .sources.locations import read

        return read(location, max_bytes, storage)
    if is_remote(location) and not location.startswith(TAR_SCHEME):
        store = storage_or_default(storage)
        try:
            size = store.size(location)
        except FileNotFoundError as exc:
            raise OSError(f"{location} does not exist") from exc
        if size > max_bytes:
            raise DecodeReject("too_many_bytes", f"{size} bytes > {max_bytes} (scan.max_bytes)")
        return _exact(store.read_range(location, 0, size), size, location)
    if not location.startswith(TAR_SCHEME):
        return read_bytes(location, max_bytes)
    try:
        path, offset, size, member = parse_tar_location(location)
    except ValueError as exc:
        raise OSError(str(exc)) from None
    if size > max_bytes:
        raise DecodeReject(
            "too_many_bytes", f"tar member {member!r}: {size} bytes > {max_bytes} (scan.max_bytes)"
        )
    if is_remote(path):  # a ranged read of the member on the store; the archive is never downloaded
        return _exact(storage_or_default(storage).read_range(path, offset, size), size, f"{path}:{member}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in cannot block
    with os.fdopen(fd, "rb") as fh:
        check_regular(path, os.fstat(fh.fileno()), 1 << 62)
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise OSError(f"tar member {member!r} of {path} is truncated ({len(data)} of {size} bytes)")
    return data


def _exact(data: bytes, size: int, what: str) -> bytes:
    if len(data) != size:
        raise OSError(f"{what} is truncated ({len(data)} of {size} bytes)")
    return data
