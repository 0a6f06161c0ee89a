"""The reader stage: a sample's members by offset, from an index of each shard's tar headers.

Each shard's headers are read once per reader (member -> offset, size); a member is then one
``read_at`` through OUT's filesystem (``sharding.layout``: local paths, ``s3://`` and other URLs),
never a whole tar.
"""

from __future__ import annotations

import tarfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from groundwork.contract import IMAGE_EXTS, drawing_member

from ..layout import Layout
from ..shardfile import sample_infos
from .errors import ShardError


@dataclass
class SampleFiles:
    """The encoded members of one sample: its illustration, its json and the line drawings asked for."""

    key: str
    image: bytes  # jpg or webp
    json: bytes
    drawings: dict[str, bytes]  # extractor -> PNG


class ShardReader:
    """Random access to sample members by key, through an index of each tar's headers.

    Thread-safe: each shard has a lock held while its handle seeks or reads (some filesystems,
    fsspec's memory one among them, hand out one shared file position per path); decoding, the
    expensive part, happens outside.
    """

    def __init__(self, layout: Layout, max_open: int = 64) -> None:
        self.layout, self.max_open = layout, max_open
        self._index: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
        self._files: OrderedDict[str, Any] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _shard_lock(self, shard: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(shard, threading.Lock())

    def _file(self, shard: str):
        """The shard's open handle (call with the shard's lock held)."""
        with self._lock:
            fh = self._files.get(shard)
            if fh is not None:
                self._files.move_to_end(shard)
                return fh
        try:
            fh = self.layout.open_input_file(self.layout.shard(shard))
        except (FileNotFoundError, OSError) as exc:
            raise ShardError(f"shard {shard}: cannot open ({exc})") from None
        with self._lock:
            self._files[shard] = fh
            while len(self._files) > self.max_open:
                # Dropped, not closed: a thread may still be reading it; it closes when released.
                self._files.popitem(last=False)
        return fh

    def _build_index(self, shard: str, fh) -> dict[str, dict[str, tuple[int, int]]]:
        size = fh.size()
        entries: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            fh.seek(0)
            with tarfile.open(fileobj=fh, mode="r:") as tar:
                for info, key, ext in sample_infos(tar):
                    if info.offset_data + info.size > size:
                        raise ShardError(f"shard {shard}: truncated inside member {info.name}")
                    entries.setdefault(key, {})[ext] = (info.offset_data, info.size)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ShardError(f"shard {shard}: unreadable tar ({exc})") from None
        return entries

    def index(self, shard: str) -> dict[str, dict[str, tuple[int, int]]]:
        """key -> {extension: (offset, size)} for one shard."""
        with self._shard_lock(shard):
            return self._index_locked(shard)

    def _index_locked(self, shard: str) -> dict[str, dict[str, tuple[int, int]]]:
        found = self._index.get(shard)
        if found is None:
            found = self._index[shard] = self._build_index(shard, self._file(shard))
        return found

    def read(self, shard: str, key: str, exts: Sequence[str | tuple[str, ...]]) -> dict[str, bytes]:
        """The members ``exts`` of sample ``key``; an extension may be a tuple of alternatives."""
        with self._shard_lock(shard):
            members = self._index_locked(shard).get(key)
            if members is None:
                raise ShardError(f"shard {shard}: sample {key} is not in it")
            fh = self._file(shard)
            out = {}
            for ext in exts:
                name = ext if isinstance(ext, str) else next((e for e in ext if e in members), ext[0])
                if name not in members:
                    raise ShardError(f"shard {shard}: sample {key} has no {name} member")
                offset, size = members[name]
                data = fh.read_at(size, offset)
                if len(data) != size:
                    raise ShardError(f"shard {shard}: member {key}.{name} is truncated")
                out[name] = data
        return out

    def sample(self, shard: str, key: str, extractors: Sequence[str]) -> SampleFiles:
        """Sample ``key``'s illustration, json and the line drawings of ``extractors``."""
        files = self.read(shard, key, (IMAGE_EXTS, "json", *[drawing_member(n) for n in extractors]))
        return SampleFiles(
            key=key,
            image=next(files[e] for e in IMAGE_EXTS if e in files),
            json=files["json"],
            drawings={n: files[drawing_member(n)] for n in extractors},
        )

    def close(self) -> None:
        """Forget the open handles (a later read reopens them)."""
        with self._lock:
            self._files.clear()


__all__ = ["SampleFiles", "ShardReader"]
