"""Which line drawing each sample exports, and its polarity.

``--extractor NAME[=SHARE][,NAME[=SHARE]...]``: a deterministic per-sample mix. A sample's first
choice is drawn among the names with a share > 0, in proportion to the shares (equal when none is
given), from a hash of the seed and its key, so it never changes between runs. A sample whose
chosen drawing was dropped by the pair-quality check takes the next name in the list (wrapping
around) that it has, a name with share 0 included (``canny,xdog=0``: canny, xdog where canny was
dropped); a sample with none of the names is left out and counted. Default: the build's first
extractor, then the others as fallbacks.

Polarity: the shards hold black ink on white paper (255 = paper). ``invert`` writes white lines on
black, the convention of ControlNet 1.1's line-art models and of the preprocessors people use at
inference (docs/export.md gives each target's default and why).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FIRST, FALLBACK, LEFT_OUT = 0, 1, 2  # how a sample's drawing was chosen
CASES = ("first_choice", "fallback", "left_out")


class DrawingError(ValueError):
    """An extractor choice this build cannot meet; the message says why."""


@dataclass(frozen=True)
class DrawingChoice:
    names: tuple[str, ...]
    shares: tuple[float, ...]  # > 0: drawn as a first choice; 0: only a fallback

    @classmethod
    def parse(cls, spec: str | None, available: Sequence[str]) -> DrawingChoice:
        """From ``--extractor`` text against the build's extractors (in build order)."""
        if not available:
            raise DrawingError("the build has no extractors")
        if spec is None:
            return cls(tuple(available), (1.0,) + (0.0,) * (len(available) - 1))
        names, shares = [], []
        for item in (p.strip() for p in spec.split(",")):
            if not item:
                continue
            name, eq, share = item.partition("=")
            name = name.strip()
            if name not in available:
                raise DrawingError(
                    f"--extractor {name!r} is not in this build (it has: {', '.join(available)})"
                )
            if name in names:
                raise DrawingError(f"--extractor names {name!r} twice")
            try:
                value = float(share) if eq else None
            except ValueError:
                raise DrawingError(f"--extractor {item!r}: the share after '=' must be a number") from None
            if value is not None and (not np.isfinite(value) or value < 0):
                raise DrawingError(f"--extractor {item!r}: a share must be >= 0")
            names.append(name)
            shares.append(value)
        if not names:
            raise DrawingError("--extractor names no extractor")
        given = [s for s in shares if s is not None]
        filled = [1.0 if s is None else s for s in shares] if len(given) < len(shares) else shares
        if sum(filled) <= 0:
            raise DrawingError("--extractor: at least one share must be > 0")
        total = sum(filled)
        return cls(tuple(names), tuple(float(s) / total for s in filled))

    def describe(self) -> dict[str, object]:
        return {"names": list(self.names), "shares": [round(s, 9) for s in self.shares]}

    def choose(
        self, u: np.ndarray, stored: Sequence[tuple[str, ...]], sets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``names`` per sample or -1, case per sample). ``u``: uniform [0, 1) per sample
        (from its key); ``stored``: the distinct sets of drawings samples have, ``sets`` a code into it."""
        cum = np.cumsum(self.shares)
        first = np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(self.names) - 1)
        # A table (set, first choice) -> (choice, case): a handful of sets, so no per-sample Python.
        n = len(self.names)
        table = np.full((len(stored), n), -1, np.int64)
        case = np.full((len(stored), n), LEFT_OUT, np.int8)
        for s, have in enumerate(stored):
            for f in range(n):
                for step in range(n):
                    j = (f + step) % n
                    if self.names[j] in have:
                        table[s, f], case[s, f] = j, FIRST if step == 0 else FALLBACK
                        break
        return table[sets, first], case[sets, first]


def key_uniforms(keys: Sequence[str], seed: int, salt: str) -> np.ndarray:
    """A uniform [0, 1) per key from a hash of (seed, salt, key): stable across runs and appends."""
    out = np.empty(len(keys), np.float64)
    prefix = f"{seed}\0{salt}\0".encode()
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(prefix + key.encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def invert_png(data: bytes) -> bytes:
    """A grayscale PNG with ink and paper swapped (white lines on black)."""
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise ValueError("line drawing does not decode")
    ok, buf = cv2.imencode(".png", 255 - gray, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("could not encode the inverted drawing")
    return buf.tobytes()


__all__ = [
    "CASES",
    "FALLBACK",
    "FIRST",
    "LEFT_OUT",
    "DrawingChoice",
    "DrawingError",
    "invert_png",
    "key_uniforms",
]
