"""How an input's place is spelled in a record's ``location``: a local path (``file://`` + quoted
bytes when the name is not UTF-8), a URL, or ``tar://ARCHIVE#OFFSET:SIZE:MEMBER`` for a member read
in place. Pure text: reading the bytes is ``curation.fetch``.
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote, unquote_to_bytes

from .storage import is_remote

TAR_SCHEME = "tar://"


FILE_SCHEME = "file://"


def quote_path(path: str) -> str:
    """Percent-quote a path's bytes: file names need not be UTF-8 (Shift-JIS names from zips)."""
    return quote(os.fsencode(path))


def unquote_path(text: str) -> str:
    return os.fsdecode(unquote_to_bytes(text))


def path_location(path: str) -> str:
    """The location text of a local file: the path itself, or ``file://<quoted bytes>`` when the
    name is not valid UTF-8 (parquet strings must be). A URL is already text."""
    if is_remote(path):
        return path
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return FILE_SCHEME + quote_path(path)
    return path


def tar_location(archive: str, offset: int, size: int, member: str) -> str:
    """``tar://<quoted archive path>#<offset>:<size>:<quoted member name>``."""
    return f"{TAR_SCHEME}{quote_path(archive)}#{offset}:{size}:{quote(os.fsencode(member), safe='')}"


def parse_tar_location(location: str) -> tuple[str, int, int, str]:
    """``tar://<quoted path>#<offset>:<size>:<quoted member>`` -> (path, offset, size, member)."""
    body = location[len(TAR_SCHEME) :]
    path, sep, frag = body.partition("#")  # '#' inside the path or member name is percent-quoted
    offset, _, rest = frag.partition(":")
    size, _, member = rest.partition(":")
    if not sep or not offset.isdigit() or not size.isdigit():
        raise ValueError(f"malformed tar location {location[:200]!r}")
    return unquote_path(path), int(offset), int(size), unquote(member, errors="replace")
