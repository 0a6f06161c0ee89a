"""Near-duplicates: a 64-bit perceptual hash per image, pairs within a Hamming radius, groups, keepers.

* ``phash64``: DCT hash of the grey image at 32x32 (robust to resizing and re-encoding).
* ``near_pairs``: multi-index hashing. The 64 bits are cut into ``parts`` substrings; two hashes
  within distance ``radius`` agree within ``radius // parts`` bits on at least one substring
  (pigeonhole), so each substring is looked up exactly after flipping at most that many of its bits.
  The search is exact, not approximate, and its work is split into independent units
  (substring x prefix partition) so that ``pipelines.dedup_ray`` can spread it over a cluster.
* ``components``: union-find over the pairs (min-label hooking with pointer jumping, vectorised).
* ``choose_keepers``: per group the best quality score survives; the rest name it in ``duplicate_of``.

Pure NumPy/OpenCV: no Ray here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from groundwork.configtable import from_table

HASH_BITS = 64


# ---------------------------------------------------------------- hashing


def phash64(grey: np.ndarray) -> int:
    """pHash: 32x32 area-downscale, 2-D DCT, the 8x8 lowest frequencies against their median.

    Returned as a signed int64 (the parquet column type); compare hashes as uint64.
    """
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    median = np.median(low[1:])  # the DC term is the mean brightness: left out of the threshold
    bits = (low > median).astype(np.uint64)
    value = int((bits << np.arange(64, dtype=np.uint64)).sum(dtype=np.uint64))
    return int(np.array(value, dtype=np.uint64).view(np.int64))


def as_unsigned(hashes: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(hashes, dtype=np.int64)).view(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(as_unsigned(a), as_unsigned(b))).astype(np.int64)


# ---------------------------------------------------------------- multi-index search


def flip_masks(bits: int, max_flips: int) -> np.ndarray:
    """Every mask over ``bits`` bits with at most ``max_flips`` ones (the zero mask first)."""
    masks = [0]
    for k in range(1, max_flips + 1):
        for combo in itertools.combinations(range(bits), k):
            masks.append(sum(1 << c for c in combo))
    return np.array(masks, dtype=np.uint64)


@dataclass(frozen=True)
class Part:
    """One substring of the hash: bits [lo, lo + bits)."""

    lo: int
    bits: int

    def keys(self, hashes: np.ndarray) -> np.ndarray:
        return (hashes >> np.uint64(self.lo)) & np.uint64((1 << self.bits) - 1)


def split_parts(parts: int) -> list[Part]:
    if not 1 <= parts <= 8:
        raise ValueError(f"parts must be 1..8, got {parts}")
    sizes = [HASH_BITS // parts + (1 if i < HASH_BITS % parts else 0) for i in range(parts)]
    starts = np.cumsum([0] + sizes[:-1])
    return [Part(int(lo), int(size)) for lo, size in zip(starts, sizes, strict=True)]


def search_units(parts: int, prefix_bits: int) -> list[tuple[int, int]]:
    """(part index, prefix value) units: together they cover the whole search exactly once."""
    return [(k, p) for k in range(parts) for p in range(1 << prefix_bits)]


class _Lookup:
    """Exact-match lookup of substring keys: (position in the query array, table item) per match.

    Key spaces up to 2**24 use a direct-address table (counts -> offsets, one gather per query);
    larger ones a bitmap filter (one gather) in front of a binary search for the rare hits.
    """

    def __init__(self, table_keys: np.ndarray, table_ids: np.ndarray, bits: int):
        order = np.argsort(table_keys, kind="stable")
        self.ids = table_ids[order]
        self.direct = bits <= 24
        if self.direct:  # the offsets replace the sorted keys (8 B an item less held per search unit)
            counts = np.bincount(table_keys.astype(np.int64), minlength=1 << bits)
            self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        else:
            self.sorted_keys = table_keys[order]
            # 256 slots per table key keep false hits rare
            self.bm_bits = min(bits, max(6, int(np.ceil(np.log2(len(order) + 1))) + 8))
            self.bm_mask = np.uint64((1 << self.bm_bits) - 1)
            self.bitmap = np.zeros(1 << self.bm_bits, dtype=bool)
            self.bitmap[(self.sorted_keys & self.bm_mask).astype(np.int64)] = True

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.direct:
            v = values.astype(np.int64)
            left = self.offsets[v]
            counts = self.offsets[v + 1] - left
            pos = np.flatnonzero(counts)
            left, counts = left[pos], counts[pos]
        else:
            pos = np.flatnonzero(self.bitmap[(values & self.bm_mask).astype(np.int64)])
            hit = values[pos]
            left = np.searchsorted(self.sorted_keys, hit, "left")
            counts = np.searchsorted(self.sorted_keys, hit, "right") - left
        total = int(counts.sum())
        if total == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        starts = np.repeat(left - np.cumsum(counts) + counts, counts)
        return np.repeat(pos, counts), self.ids[starts + np.arange(total)]


def unit_pairs(
    hashes: np.ndarray,
    *,
    radius: int,
    parts: int,
    unit: tuple[int, int],
    prefix_bits: int = 0,
    block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j, Hamming distance <= radius) found through one search unit.

    The unit's table holds the items whose substring ``k`` starts with ``prefix`` (its top
    ``prefix_bits`` bits); every item whose substring is within ``radius // parts`` flips of some
    table key is a query. Flips of the prefix bits are fixed by the unit (prefix XOR the query's
    prefix), so the remaining flips are spread over the low bits only and no unit repeats another's
    work. Memory: the table's keys and a bitmap over the unit's low-bit key space.
    """
    hashes = as_unsigned(hashes)
    k, prefix = unit
    part = split_parts(parts)[k]
    sub = radius // parts
    low_bits = part.bits - prefix_bits
    keys = part.keys(hashes)
    low_mask = np.uint64((1 << low_bits) - 1)
    if prefix_bits:
        q_prefix = keys >> np.uint64(low_bits)
        table = np.flatnonzero(q_prefix == np.uint64(prefix))
        prefix_flips = np.bitwise_count(q_prefix ^ np.uint64(prefix))  # uint8: 1 B an item
        del q_prefix
    else:  # one unit per substring: every item is in the table and its prefix costs no flip
        table = np.arange(len(keys))
        prefix_flips = np.zeros(len(keys), np.uint8)
    if len(table) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lookup = _Lookup(keys[table] & low_mask, table, low_bits)
    out_i, out_j = [], []
    for budget in range(sub + 1):  # queries whose prefix already costs (sub - budget) flips
        queries = np.flatnonzero(prefix_flips == sub - budget)
        if len(queries) == 0:
            continue
        masks = flip_masks(low_bits, budget)
        step = max(1, block * 16 // len(masks))
        for start in range(0, len(queries), step):
            q = queries[start : start + step]
            variants = ((keys[q] & low_mask)[:, None] ^ masks[None, :]).ravel()
            i_pos, j = lookup.find(variants)
            if len(j) == 0:
                continue
            i = q[i_pos // len(masks)]
            keep = (i < j) & (np.bitwise_count(hashes[i] ^ hashes[j]) <= radius)
            out_i.append(i[keep])
            out_j.append(j[keep])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def unique_pairs(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(i) == 0:
        return i, j
    packed = np.unique(np.stack([i, j], axis=1), axis=0)
    return packed[:, 0], packed[:, 1]


def collapse_equal(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct hashes, index of each item's distinct hash, equal-hash pairs as (first, other)).

    Identical hashes (exact copies, or many copies of one image) become one search item, so a
    thousand copies cost one lookup instead of a million pairs.
    """
    hashes = as_unsigned(hashes)
    distinct, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    others = np.flatnonzero(first[inverse] != np.arange(len(hashes)))
    return (
        distinct,
        inverse,
        np.stack([first[inverse[others]], others]) if len(others) else np.empty((2, 0), np.int64),
    )


def _serial_map(
    fn: Callable[..., Any], hashes: np.ndarray, units: list[tuple[int, int]], **kwargs: Any
) -> list[Any]:
    return [fn(hashes, unit=unit, **kwargs) for unit in units]


def near_pairs(
    hashes: Any,
    radius: int,
    parts: int = 3,
    *,
    prefix_bits: int = 0,
    map_units: Callable[..., list[Any]] = _serial_map,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) within ``radius`` bits: enough pairs to connect every group, not all of them.

    Items with identical hashes are searched once and linked to their first copy; ``map_units``
    runs ``unit_pairs`` over the search units (serially here, as Ray tasks in pipelines.dedup).
    """
    hashes = as_unsigned(hashes)
    if len(hashes) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    distinct, inverse, equal = collapse_equal(hashes)
    first_of = np.full(len(distinct), -1, np.int64)
    first_of[inverse[::-1]] = np.arange(len(hashes))[::-1]
    ii, jj = [equal[0]], [equal[1]]
    units = search_units(parts, prefix_bits)
    for i, j in map_units(unit_pairs, distinct, units, radius=radius, parts=parts, prefix_bits=prefix_bits):
        ii.append(first_of[i])
        jj.append(first_of[j])
    i, j = np.concatenate(ii).astype(np.int64), np.concatenate(jj).astype(np.int64)
    return unique_pairs(np.minimum(i, j), np.maximum(i, j))


# ---------------------------------------------------------------- grouping


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over ``n`` items and the edges (i, j): the smallest member index of each group.

    Vectorised: every edge hooks the larger root under the smaller (union by min label), then
    pointer jumping compresses every path (find); repeated until each edge is inside one group.
    """
    parent = np.arange(n, dtype=np.int64)
    if len(i) == 0:
        return parent
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    while True:
        ri, rj = parent[i], parent[j]
        differ = ri != rj
        if not differ.any():
            return parent
        lo = np.minimum(ri[differ], rj[differ])
        hi = np.maximum(ri[differ], rj[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


def choose_keepers(groups: np.ndarray, score: np.ndarray, pixels: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Index of each item's group keeper: highest score, then most pixels, then earliest input."""
    score = np.nan_to_num(np.asarray(score, np.float64), nan=-np.inf)
    order = np.lexsort((seq, -np.asarray(pixels, np.float64), -score, groups))
    g_sorted = groups[order]
    first = np.ones(len(order), bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    keeper = np.empty(len(order), np.int64)
    keeper[order] = order[np.flatnonzero(first)][np.cumsum(first) - 1]
    return keeper


@dataclass(frozen=True)
class DedupConfig:
    """``[dedup]``: near-duplicate removal in the plan phase."""

    enabled: bool = True
    # Resized (x0.5..x1.3) and re-encoded (JPEG q60..90) copies of the corpus images land 0..2 bits
    # from their original; distinct corpus images are >= 18 bits apart (docs/curation.md).
    radius: int = 4
    # Substrings for multi-index hashing. 3 (21-22 bits, one flip per lookup) is the cheapest exact
    # search for radius 4-5 at 10 M hashes; 2 would need 529 lookups per substring.
    parts: int = 3
    ray_threshold: int = 20_000_000  # above this many kept samples, the search runs as Ray tasks
    ray_prefix_bits: int = 4  # 2**bits partitions of each substring's key space on the Ray route

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DedupConfig:
        cfg = from_table(cls, data, "dedup")
        if not 0 <= cfg.radius <= 16:
            raise ValueError(f"dedup.radius must be 0..16, got {cfg.radius}")
        if not 1 <= cfg.parts <= 8 or cfg.radius // cfg.parts > 3:
            raise ValueError(f"dedup.parts must be 1..8 with radius // parts <= 3, got parts={cfg.parts}")
        if not 0 <= cfg.ray_prefix_bits <= 12 or cfg.ray_threshold < 0:
            raise ValueError("dedup.ray_prefix_bits must be 0..12 and dedup.ray_threshold >= 0")
        return cfg


@dataclass
class DedupResult:
    keeper: np.ndarray  # index of the kept member of each item's group (itself when kept)
    exact: np.ndarray  # bool: same sha256 as its keeper
    pairs: int  # number of near pairs found

    @property
    def dropped(self) -> np.ndarray:
        return self.keeper != np.arange(len(self.keeper))


def resolve(
    pairs: tuple[np.ndarray, np.ndarray],
    sha256: np.ndarray,
    score: np.ndarray,
    pixels: np.ndarray,
    seq: np.ndarray,
) -> DedupResult:
    """Groups from the near pairs plus byte-identical files, then one keeper per group.

    ``sha256``: the content hashes as strings, or as integer codes (equal code = equal hash).
    """
    n = len(sha256)
    i, j = pairs
    # Integer codes (one per distinct sha256, e.g. an Arrow dictionary's indices) are used as they
    # are; strings are coded here. Exact duplicates join their group even when a hash was missing.
    sha = np.asarray(sha256)
    if not np.issubdtype(sha.dtype, np.integer):
        sha = np.unique(np.asarray(sha256, dtype=object).astype(str), return_inverse=True)[1].reshape(-1)
    _, first, inverse = np.unique(sha, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    same = np.flatnonzero(first[inverse] != np.arange(n))
    i = np.concatenate([i, first[inverse[same]]])
    j = np.concatenate([j, same])
    groups = components(n, i, j)
    keeper = choose_keepers(groups, score, pixels, seq)
    exact = sha == sha[keeper]
    return DedupResult(keeper, exact, len(pairs[0]))
