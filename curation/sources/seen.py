"""A set of source ids in bounded memory: Danbooru ids are dense integers, so they are kept as bits
(10 million ids in ~1.2 MB instead of ~800 MB of Python strings); any other id in a plain set."""

from __future__ import annotations

_CHUNK_BITS = 20  # 1,048,576 ids per chunk: a 128 KiB bitmap once dense
_DENSE = 4096  # a chunk holding more ids than this becomes a bitmap


class SeenIds:
    def __init__(self) -> None:
        self._chunks: dict[int, set[int] | bytearray] = {}
        self._other: set[str] = set()
        self._count = 0

    @staticmethod
    def _number(source_id: str) -> int | None:
        # canonical decimal only: "007" and "7" are different ids
        if source_id.isdigit() and source_id.isascii() and (source_id == "0" or source_id[0] != "0"):
            return int(source_id)
        return None

    def __contains__(self, source_id: str) -> bool:
        n = self._number(source_id)
        if n is None:
            return source_id in self._other
        chunk = self._chunks.get(n >> _CHUNK_BITS)
        if chunk is None:
            return False
        low = n & ((1 << _CHUNK_BITS) - 1)
        if isinstance(chunk, set):
            return low in chunk
        return bool(chunk[low >> 3] & (1 << (low & 7)))

    def add(self, source_id: str) -> None:
        if source_id in self:
            return
        self._count += 1
        n = self._number(source_id)
        if n is None:
            self._other.add(source_id)
            return
        key, low = n >> _CHUNK_BITS, n & ((1 << _CHUNK_BITS) - 1)
        chunk = self._chunks.setdefault(key, set())
        if isinstance(chunk, set):
            chunk.add(low)
            if len(chunk) > _DENSE:
                bits = bytearray(1 << (_CHUNK_BITS - 3))
                for v in chunk:
                    bits[v >> 3] |= 1 << (v & 7)
                self._chunks[key] = bits
            return
        chunk[low >> 3] |= 1 << (low & 7)

    def __len__(self) -> int:
        return self._count
