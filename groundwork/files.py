"""Files written whole or not at all, and hashed in blocks: the one atomic writer of the project.

Commit rule: a file is complete or absent. Locally a write goes to a temporary name beside the
target (``TMP_MARK``), is fsynced, renamed over the target, and the folder is fsynced so the rename
itself survives a power cut. Object stores have no rename, but an object only appears once its
upload is complete, so a write there is one upload of the whole bytes (a streamed file is spooled
to a local temporary file first, so an error half-way leaves no object behind).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any

import pyarrow.fs as pafs

TMP_MARK = ".tmp-"  # in the name of a local write in progress (a leftover is a killed writer's)
READ_BLOCK = 1 << 20


def sha256_file(path: str) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks (checkpoints and shards can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: str) -> None:
    """Make a rename inside folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_local(fs: pafs.FileSystem | None) -> bool:
    return fs is None or isinstance(fs, pafs.LocalFileSystem)


def temp_name(path: str) -> str:
    """A unique temporary name beside ``path`` (same folder: the rename stays on one filesystem)."""
    return f"{path}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_file(path: str, fs: pafs.FileSystem | None = None, *, durable: bool = True) -> Iterator[IO[bytes]]:
    """A binary file to write that appears at ``path`` complete on a clean exit, or not at all.

    ``fs``: None or a local filesystem (``path`` is a local path), else a pyarrow filesystem of an
    object store (``path`` inside it). ``durable=False`` skips the fsyncs (still atomic): for many
    small files whose durability a later marker vouches for (an export's per-sample files)."""
    if _is_local(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = temp_name(path)
        try:
            with open(tmp, "wb") as fh:
                yield fh
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:  # noqa: BLE001 - disk full, read-only, interrupted: remove the half file, then re-raise
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        if durable:
            fsync_dir(os.path.dirname(path) or ".")
        return
    with tempfile.TemporaryFile(prefix="linepairs-") as spool:
        yield spool
        spool.seek(0)
        with fs.open_output_stream(path) as dst:  # one upload, completed on close
            shutil.copyfileobj(spool, dst, 8 << 20)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A local temporary path for a writer that wants a file name (safetensors, OpenCV): what it
    leaves there is fsynced and renamed to ``path`` on a clean exit, removed otherwise. ``suffix``:
    the temporary name's ending, for writers that choose the format by it (``.png``)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temp_name(path) + suffix
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # noqa: BLE001 - remove the half file, then re-raise
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def write_atomic(path: str, data: bytes, fs: pafs.FileSystem | None = None) -> None:
    """Commit ``data`` at ``path`` (see the module doc): complete or absent, never half."""
    if _is_local(fs):
        with atomic_file(path) as fh:
            fh.write(data)
        return
    # One upload of the whole bytes: the store's stream completes its (multipart) upload on close
    # and aborts it on error, so a killed writer leaves no object behind.
    with fs.open_output_stream(path) as fh:
        fh.write(data)


def json_bytes(data: Any, indent: int = 2) -> bytes:
    """The project's JSON files: sorted keys, so equal data is equal bytes."""
    return (json.dumps(data, indent=indent, sort_keys=True, ensure_ascii=False) + "\n").encode()


__all__ = [
    "TMP_MARK",
    "atomic_file",
    "atomic_path",
    "fsync_dir",
    "json_bytes",
    "sha256_file",
    "temp_name",
    "write_atomic",
]
