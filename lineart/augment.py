"""Line-drawing augmentations: pure functions over ``H x W uint8`` drawings (255 = paper, 0 = ink).

Each operation is a plain function of the drawing and explicit parameters. ``draw`` picks which
operations run and with what parameters from a seeded ``numpy.random.Generator`` under an
``AugmentPolicy``; ``apply`` replays such a record. The record is JSON-able, so a sample's json
says exactly what was done to its drawing, and ``apply(clean, record)`` reproduces it.

Operations, in the order they are applied: thickness (erode/dilate), stroke dropout, elastic
jitter, binarisation, paper tone and noise, JPEG re-compression.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from groundwork.configtable import from_table

OPS = ("thickness", "dropout", "jitter", "binarize", "paper", "jpeg")
# Each operation's parameters and their types, as ``draw`` records them (the sample JSON's
# `augment` features, sharding/samplejson.py, are made from this table).
OP_PARAMS: dict[str, dict[str, type]] = {
    "thickness": {"delta": int},
    "dropout": {"fraction": float, "blob": int, "seed": int},
    "jitter": {"alpha": float, "grid": int, "seed": int},
    "binarize": {"threshold": int},
    "paper": {"tone": int, "noise": float, "seed": int},
    "jpeg": {"quality": int},
}


# ---------------------------------------------------------------- operations


def thickness(lines: np.ndarray, delta: int) -> np.ndarray:
    """Thicken strokes by ``delta`` pixels (> 0: erode the paper) or thin them (< 0: dilate it)."""
    if delta == 0:
        return lines
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(delta) + 1, 2 * abs(delta) + 1))
    return cv2.erode(lines, k) if delta > 0 else cv2.dilate(lines, k)


def _smooth_noise(shape: tuple[int, int], cell: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise on a grid of ``cell``-pixel cells, bicubically upsampled to ``shape``: smooth blobs."""
    h, w = shape
    grid = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def dropout(lines: np.ndarray, fraction: float, blob: int, seed: int) -> np.ndarray:
    """Erase the ink inside random smooth blobs (about ``blob`` px across) covering ``fraction`` of the
    area: broken, missing strokes, as in an unfinished sketch."""
    if fraction <= 0:
        return lines
    field = _smooth_noise(lines.shape, blob, np.random.default_rng(seed))
    erase = field < np.quantile(field, fraction)
    return np.where(erase, np.uint8(255), lines)


def jitter(lines: np.ndarray, alpha: float, grid: int, seed: int) -> np.ndarray:
    """Small elastic deformation: a smooth displacement field of at most ``alpha`` px, varying over
    ``grid`` px (Simard et al. 2003, with bicubic interpolation of a coarse random field)."""
    if alpha <= 0:
        return lines
    rng = np.random.default_rng(seed)
    h, w = lines.shape
    dx = (_smooth_noise((h, w), grid, rng) * 2 - 1) * alpha
    dy = (_smooth_noise((h, w), grid, rng) * 2 - 1) * alpha
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(
        lines, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255
    )


def binarize(lines: np.ndarray, threshold: int) -> np.ndarray:
    """Hard ink/paper: ink where darker than ``threshold``."""
    return np.where(lines < threshold, np.uint8(0), np.uint8(255))


def paper(lines: np.ndarray, tone: int, noise: float, seed: int) -> np.ndarray:
    """Paper of gray level ``tone`` instead of white (ink stays black), plus Gaussian noise of std ``noise``."""
    out = lines.astype(np.float32) * np.float32(tone / 255.0)
    if noise > 0:
        out += np.random.default_rng(seed).normal(0.0, noise, lines.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jpeg(lines: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` and decode again: block and ringing artefacts."""
    ok, buf = cv2.imencode(".jpg", lines, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


# ---------------------------------------------------------------- policy, draw, apply


@dataclass(frozen=True)
class AugmentPolicy:
    """Probability of each operation and the ranges its parameters are drawn from (inclusive).

    The build carries it as ``[augment]``; off by default (``enabled = false``): a build stores the
    clean drawings and training draws fresh augmentations every epoch, which a build cannot.
    """

    enabled: bool = False
    thickness_p: float = 0.3
    thickness_delta: tuple[int, int] = (0, 1)  # pixels; negative thins (and erases 1-px strokes)
    dropout_p: float = 0.2
    dropout_fraction: tuple[float, float] = (0.02, 0.12)
    dropout_blob: tuple[int, int] = (12, 48)  # px
    jitter_p: float = 0.2
    jitter_alpha: tuple[float, float] = (0.5, 2.0)  # px
    jitter_grid: tuple[int, int] = (32, 96)  # px
    binarize_p: float = 0.2
    binarize_threshold: tuple[int, int] = (96, 200)
    paper_p: float = 0.3
    paper_tone: tuple[int, int] = (215, 255)
    paper_noise: tuple[float, float] = (0.0, 6.0)
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)

    def check(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") and not 0 <= v <= 1:
                raise ValueError(f"augment.{f.name} must be in [0, 1], got {v}")
            if isinstance(v, tuple) and not v[0] <= v[1]:
                raise ValueError(f"augment.{f.name} must be [low, high] with low <= high, got {list(v)}")
        limits = {
            "thickness_delta": (-8, 8), "dropout_fraction": (0, 1), "dropout_blob": (2, 4096),
            "jitter_alpha": (0, 64), "jitter_grid": (4, 4096), "binarize_threshold": (1, 255),
            "paper_tone": (0, 255), "paper_noise": (0, 255), "jpeg_quality": (1, 100),
        }  # fmt: skip
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if v[0] < lo or v[1] > hi:
                raise ValueError(f"augment.{name} must lie within [{lo}, {hi}], got {list(v)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentPolicy:
        """From a config table: ranges are 2-element lists; ints are accepted where floats are."""
        if isinstance(data, dict):
            data = dict(data)
            for f in dataclasses.fields(cls):
                default = getattr(cls(), f.name)
                if isinstance(default, tuple) and f.name in data:
                    data[f.name] = _range(data[f.name], type(default[0]), f.name)
        return from_table(cls, data, "augment")


def _range(value: Any, kind: type, name: str) -> tuple:
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if ok and kind is int:
        ok = all(isinstance(v, int) for v in value)
    if not ok:
        raise ValueError(f"augment.{name} must be [low, high] ({kind.__name__}s), got {value!r}")
    return tuple(kind(v) for v in value)


def sample_seed(seed: int, key: str, extractor: str) -> int:
    """One seed per (build seed, sample, extractor): independent of shard order and of other samples."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{extractor}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw(policy: AugmentPolicy, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """Which operations run, with which parameters: ``{op: {param: value}}`` in application order.

    Every operation consumes the same draws whether it runs or not, so changing one probability
    does not reshuffle the parameters of the others.
    """

    def uni(r):
        return round(float(rng.uniform(r[0], r[1])), 4)

    def integer(r):
        return int(rng.integers(r[0], r[1] + 1))

    def seed():
        return int(rng.integers(0, 2**31))

    p = policy
    candidates = {
        "thickness": (p.thickness_p, {"delta": integer(p.thickness_delta)}),
        "dropout": (p.dropout_p, {"fraction": uni(p.dropout_fraction), "blob": integer(p.dropout_blob), "seed": seed()}),
        "jitter": (p.jitter_p, {"alpha": uni(p.jitter_alpha), "grid": integer(p.jitter_grid), "seed": seed()}),
        "binarize": (p.binarize_p, {"threshold": integer(p.binarize_threshold)}),
        "paper": (p.paper_p, {"tone": integer(p.paper_tone), "noise": uni(p.paper_noise), "seed": seed()}),
        "jpeg": (p.jpeg_p, {"quality": integer(p.jpeg_quality)}),
    }  # fmt: skip
    coins = rng.random(len(OPS))
    return {
        op: params
        for (op, (prob, params)), coin in zip(candidates.items(), coins, strict=True)
        if coin < prob
    }


_APPLY = {
    "thickness": thickness,
    "dropout": dropout,
    "jitter": jitter,
    "binarize": binarize,
    "paper": paper,
    "jpeg": jpeg,
}


def apply(lines: np.ndarray, record: dict[str, dict[str, Any]]) -> np.ndarray:
    """Replay a record from ``draw`` on a drawing (operations in the fixed order of ``OPS``)."""
    unknown = set(record) - set(OPS)
    if unknown:
        raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {', '.join(OPS)}")
    if lines.ndim != 2 or lines.dtype != np.uint8:
        raise ValueError(f"expected an H x W uint8 drawing, got {lines.shape} {lines.dtype}")
    for op in OPS:
        if op in record:
            lines = _APPLY[op](lines, **record[op])
    return lines


def augment(
    lines: np.ndarray, policy: AugmentPolicy, seed: int
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Draw a record from ``seed`` under ``policy`` and apply it: (drawing, record)."""
    record = draw(policy, np.random.default_rng(seed))
    return apply(lines, record), record
