"""Sources on object storage: ``s3://``, ``gs://`` ... paths, read through OUT's filesystem layer.

A source path is either local (read with ``os``, so the local safety rules of the readers hold:
links, FIFOs, non-UTF-8 names) or a URL. URLs go through ``groundwork.filesystems.open_filesystem``,
the one filesystem layer of the project, with the build's ``--storage-option`` settings; one
filesystem per ``scheme://bucket``. Object stores have no links, devices or FIFOs, so the local
rules have nothing to check there. A ``SourceStorage`` pickles with its opened filesystems (the
driver's ``AWS_*`` settings travel with them, as for OUT), so a worker reads the store, never the
driver's disk; its repr never shows an option.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, BinaryIO

from groundwork.filesystems import open_filesystem

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str) -> bool:
    """A URL other than ``file://`` (those are local paths)."""
    return bool(_URL.match(path)) and not path.lower().startswith("file://")


def local_path(path: str) -> str:
    """``file:///x`` -> ``/x``; anything else unchanged."""
    return path[len("file://") :] or "/" if path.lower().startswith("file://") else path


class SourceStorage:
    """The filesystems of a build's URL sources, opened once per ``scheme://bucket``."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self._options = dict(options or {})
        self._fs: dict[str, tuple[Any, str]] = {}

    def __repr__(self) -> str:  # never the options: they may hold credentials
        return f"SourceStorage({sorted(self._fs)})"

    def __eq__(self, other: object) -> bool:  # settings objects compare; the opened clients do not matter
        return isinstance(other, SourceStorage)

    def __hash__(self) -> int:
        return 0

    def resolve(self, url: str) -> tuple[Any, str]:
        """(pyarrow filesystem, path inside it) of a URL."""
        scheme, _, rest = url.partition("://")
        bucket = rest.split("/", 1)[0]
        prefix = f"{scheme}://{bucket}"
        if prefix not in self._fs:
            self._fs[prefix] = open_filesystem(prefix, self._options)
        fs, base = self._fs[prefix]
        return fs, base.rstrip("/") + rest[len(bucket) :].rstrip("/")

    def info(self, url: str) -> Any:
        fs, path = self.resolve(url)
        return fs.get_file_info(path)

    def isfile(self, url: str) -> bool:
        import pyarrow.fs as pafs

        return self.info(url).type == pafs.FileType.File

    def isdir(self, url: str) -> bool:
        import pyarrow.fs as pafs

        return self.info(url).type == pafs.FileType.Directory

    def size(self, url: str) -> int:
        return int(self.info(url).size)

    def files(self, url: str, recursive: bool = True) -> list[str]:
        """Every object below ``url`` as URLs, sorted; names with a hidden (dot) part are skipped."""
        import pyarrow.fs as pafs

        fs, path = self.resolve(url)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        base = url.rstrip("/")
        found = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(path.rstrip("/")) + 1 :]
            if not any(part.startswith(".") for part in rel.split("/")):
                found.append(f"{base}/{rel}")
        return sorted(found)

    def open(self, url: str) -> BinaryIO:
        """A seekable binary file whose reads are ranged requests of exactly the bytes asked for.

        fsspec files read ahead in 5 MB blocks by default: indexing a tar's headers would fetch
        nearly the whole archive, and one member would cost 5 MB. So no cache: a tar index costs a
        small GET per header and a member one GET of its own bytes.
        """
        fs, path = self.resolve(url)
        inner = getattr(getattr(fs, "handler", None), "fs", None)  # the fsspec filesystem, if any
        if inner is not None:
            return inner.open(path, "rb", cache_type="none")
        return fs.open_input_file(path)

    def read_range(self, url: str, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset``: one ranged GET on an object store."""
        with self.open(url) as fh:
            fh.seek(offset)
            return fh.read(size)


# URL reads without a build's options (a command given only the AWS_* variables).
DEFAULT = SourceStorage()


def storage_or_default(storage: SourceStorage | None) -> SourceStorage:
    return storage if storage is not None else DEFAULT


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_remote(base) else os.path.join(base, *parts)


def relpath(path: str, root: str) -> str:
    """``path`` relative to ``root``, with ``/`` separators."""
    if is_remote(path):
        root = root.rstrip("/") + "/"
        return path[len(root) :] if path.startswith(root) else path
    return os.path.relpath(path, root).replace(os.sep, "/")


def dirname(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(path)
