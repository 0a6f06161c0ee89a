"""Deterministic WebDataset tar writing: temporary name, fsync, atomic rename.

Headers are fixed (mtime 0, uid/gid 0, mode 0644, pax, no extended headers for short names) so that the same samples give the
same bytes on every run and machine; members keep the order given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ShardStats:
    path: str  # relative to OUT
    samples: int
    bytes: int
    sha256: str


def _member(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
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


def tar_bytes(samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> tuple[bytes, int]:
    """``(key, [(extension, data), ...])`` -> tar bytes and the sample count."""
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, members in samples:
            if "." in key:
                raise ValueError(f"sample key {key!r} contains a dot")
            for ext, data in members:
                tar.addfile(_member(f"{key}.{ext}", data), io.BytesIO(data))
            count += 1
    return buf.getvalue(), count


def write_shard(
    out: str, rel_path: str, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]
) -> ShardStats:
    data, count = tar_bytes(samples)
    atomic_write_bytes(os.path.join(out, rel_path), data)
    return ShardStats(rel_path, count, len(data), hashlib.sha256(data).hexdigest())
