"""Deterministic WebDataset tar bytes, committed into OUT through ``sharding.layout``.

Headers are fixed (mtime 0, uid/gid 0, mode 0644, pax, no extended headers for short names) so that the same samples give the
same bytes on every run and machine; members keep the order given.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from .layout import Layout


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
    out: Layout | str, rel_path: str, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]
) -> ShardStats:
    """Commit one shard (complete or absent); its size and sha256 are what the state file records."""
    layout = out if isinstance(out, Layout) else Layout(out)
    data, count = tar_bytes(samples)
    layout.write_bytes(layout.shard(rel_path), data)
    return ShardStats(rel_path, count, len(data), hashlib.sha256(data).hexdigest())
