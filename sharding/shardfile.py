"""The members of one whole shard held in memory, by sample key: for readers that take a shard at a
time (the W-net's latent cache) rather than one sample by offset (the loader's reader)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator

from groundwork.contract import sample_member


class ShardFileError(ValueError):
    """The bytes are not a readable shard tar."""


def sample_infos(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """(member, key, extension) for each regular file of ``tar`` that belongs to a sample
    (``groundwork.contract.sample_member``), in tar order; folders and other names are passed over.
    Works on a stream (``mode="r|"``): read a member before asking for the next."""
    for info in tar:
        member = sample_member(info.name) if info.isfile() else None
        if member is not None:
            yield info, member[0], member[1]


def sample_members(data: bytes, exts: Iterable[str] | None = None) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} of a shard's ``KEY.EXT`` members (those with an extension in
    ``exts``, every one when None); folders and names with a ``/`` are not samples' and are skipped."""
    wanted = None if exts is None else set(exts)
    out: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info, key, ext in sample_infos(tar):
                if wanted is not None and ext not in wanted:
                    continue
                fh = tar.extractfile(info)
                if fh is not None:
                    out.setdefault(key, {})[ext] = fh.read()
    except (tarfile.TarError, EOFError) as exc:
        raise ShardFileError(f"unreadable shard tar ({exc})") from None
    return out


__all__ = ["ShardFileError", "sample_infos", "sample_members"]
