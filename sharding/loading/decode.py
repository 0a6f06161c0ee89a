"""The decode stage: each drawn sample read and turned into arrays, in threads (OpenCV releases the GIL).

A sample that cannot be read or decoded is a ``ShardError`` naming its shard and key, or, with
``skip_bad_shards``, a warning and a gap (``None``) that the batch stage leaves out.
"""

from __future__ import annotations

import concurrent.futures
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

from .. import samplejson
from .errors import ShardError
from .reader import SampleFiles, ShardReader


class PairSample(NamedTuple):
    """One drawn sample: arrays when decoded, else the encoded bytes."""

    key: str
    meta: dict[str, Any]
    image: np.ndarray | bytes  # H×W×3 uint8 RGB, or jpg/webp
    line: np.ndarray | bytes  # H×W uint8, or PNG


def decode_rgb(data: bytes) -> np.ndarray:
    """An encoded illustration as H×W×3 uint8 RGB; ValueError when it does not decode."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("illustration does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_gray(data: bytes) -> np.ndarray:
    """An encoded line drawing as H×W uint8 (255 = paper); ValueError when it does not decode."""
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError("line drawing does not decode")
    return gray


def decode_pair(files: SampleFiles, extractor: str, decode: bool = True) -> PairSample:
    """The sample with the line drawing of ``extractor``: its json decoded first, then (``decode``) the images."""
    meta = samplejson.decode(files.json)
    line = files.drawings[extractor]
    if not decode:
        return PairSample(files.key, meta, files.image, line)
    return PairSample(files.key, meta, decode_rgb(files.image), decode_gray(line))


def decode_whole(files: SampleFiles) -> dict[str, Any]:
    """{"key", "image" (RGB), "lines" {extractor: gray}, "meta"}: every member read, decoded."""
    return {
        "key": files.key,
        "image": decode_rgb(files.image),
        "lines": {n: decode_gray(data) for n, data in files.drawings.items()},
        "meta": samplejson.decode(files.json),
    }


class Decoder:
    """Reads and decodes the samples of a batch, in ``threads`` threads (made on first use)."""

    def __init__(self, decode: bool = True, skip_bad_shards: bool = False, threads: int = 4) -> None:
        self.decode, self.skip_bad_shards, self.threads = decode, skip_bad_shards, max(1, threads)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def load(self, reader: ShardReader, shard: str, key: str, extractor: str) -> PairSample | None:
        """One sample; None when it is unreadable and bad shards are skipped."""
        try:
            return decode_pair(reader.sample(shard, key, [extractor]), extractor, self.decode)
        except (ShardError, ValueError) as exc:
            if not self.skip_bad_shards:
                raise ShardError(f"shard {shard}, sample {key}: {exc}") from None
            warnings.warn(f"skipping sample {key} of shard {shard}: {exc}", stacklevel=2)
            return None

    def load_all(self, reader: ShardReader, shards: Sequence[str], keys: Sequence[str],
                 extractors: Sequence[str]) -> list[PairSample | None]:  # fmt: skip
        """The samples in order (``None`` for each one skipped)."""
        jobs = list(zip(shards, keys, extractors, strict=True))
        if self.threads > 1 and len(jobs) > 1:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.threads)
            return list(self._pool.map(lambda job: self.load(reader, *job), jobs))
        return [self.load(reader, *job) for job in jobs]

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker's copy makes its own threads
        return {**self.__dict__, "_pool": None}


__all__ = ["Decoder", "PairSample", "decode_gray", "decode_pair", "decode_rgb", "decode_whole"]
