"""One quality score per sample in [0, 1]: metadata popularity, learned aesthetics, classical measures.

``quality_score`` is a weighted mean of components, each mapped to [0, 1]; a component the sample
lacks drops out and the others are re-weighted, so samples from every source share one scale.
What each source has decides its formula (docs/curation.md, "Quality score"):

* a Danbooru source: ``score`` and ``fav`` percentiles within the source (quantile tables
  computed once per build: ``source_quantiles``) plus every pixel component;
* a folder: pixel components only, plus ``aesthetic`` / ``dbaesthetic`` when those scorers are configured.

Components:

* ``score`` / ``fav``: the Danbooru score and fav_count as a percentile within the sample's source;
* ``aesthetic``: the scan column ``aesthetic`` (LAION improved aesthetic predictor, 1..10), 4 -> 0 and
  7 -> 1 (LAION's filtered sets start near 5; above 7 is rare); null when no scorer is configured;
* ``dbaesthetic``: the scan column ``dbaesthetic_percentile`` (deepghs' Danbooru aesthetic model: where the
  image would rank among Danbooru posts, 0..1), used as it is; null when that scorer is not configured;
* ``learned``: a TorchScript model's score (``LearnedScorer``), sigmoid of its output when ``scorer_logits``;
* ``illustration``: P(drawn illustration) of curation/artmodel.py, 0.5 (the reject cut) -> 0 and 1 -> 1;
* ``fills``: share of flat (gradient-free) content, 0.05 -> 0 and 0.4 -> 1 (weight 0 by default: it is
  already inside ``illustration``, and alone it ranks 3D renders and photos on white near the top);
* ``edge``: edge sharpness at the detail's own scale (``metrics.edge_sharpness`` on ``metrics.detail_field``, 7x7 window), 0.5 -> 0
  and 0.75 -> 1: inked edges are abrupt (keeps' median 0.65), photographs' are spread (~0.48);
* ``sharpness``: log10 of the median-filtered Laplacian variance, 400 -> 0 and 10 000 -> 1, times
  (1 - noise / max_noise) and (2 - blockiness), so grain and JPEG blocks never read as detail;
* ``resolution``: effective short side (short side / upscale factor, the detail it holds), 256 -> 0 and
  1024 -> 1, divided by the bucket upscale when the plan knows it;
* ``colorfulness``: Hasler-Suesstrunk M / 80 (their "extremely colourful" band starts near 80);
* ``jpeg``: estimated JPEG quality, 40 -> 0 and 95 -> 1;
* ``clean``: 1 - (border share / 0.3 + text density / 0.015 + lettering area / 0.05), clipped (straight lines
  no longer count: architecture is drawn with them).

The weights tiers (``curation.weighting``) read this score from the ``quality_score`` column.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from groundwork.configtable import from_table

QUANTILES = 201  # points of each source's score / fav_count quantile table (0.5 % resolution)


@dataclass(frozen=True)
class QualityConfig:
    """``[quality]``: component weights and the optional learned scorer."""

    score_weight: float = 0.3
    fav_weight: float = 0.2
    aesthetic_weight: float = 0.5  # counts only where the scan has an ``aesthetic`` value
    dbaesthetic_weight: float = 0.5  # counts only where the scan has a ``dbaesthetic_percentile``
    learned_weight: float = 0.5  # counts only when a TorchScript scorer is configured
    illustration_weight: float = 0.2
    fills_weight: float = (
        0.0  # off: flat share is inside ``illustration``; alone it ranks renders and photos on white high
    )
    sharpness_weight: float = 0.1
    resolution_weight: float = 0.2
    colorfulness_weight: float = 0.2
    jpeg_weight: float = 0.1
    clean_weight: float = 0.2
    edge_weight: float = 0.2
    scorer: str = ""  # path of a TorchScript model: N x 3 x S x S float -> N scores ("" = none)
    scorer_size: int = 224
    scorer_mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB order
    scorer_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scorer_batch: int = 32
    scorer_device: str = "cpu"
    scorer_logits: bool = True  # apply a sigmoid to the model output

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityConfig:
        cfg = from_table(cls, data, "quality")
        weights = [v for k, v in vars(cfg).items() if k.endswith("_weight")]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("quality.*_weight must be >= 0 and not all 0")
        if len(cfg.scorer_mean) != 3 or len(cfg.scorer_std) != 3 or min(cfg.scorer_std) <= 0:
            raise ValueError("quality.scorer_mean and scorer_std need 3 values (RGB), std > 0")
        if cfg.scorer_size < 8 or cfg.scorer_batch < 1:
            raise ValueError("quality.scorer_size must be >= 8 and scorer_batch >= 1")
        return cfg


def source_quantiles(sources: Sequence[str], values: np.ndarray) -> dict[str, list[float]]:
    """Per source, QUANTILES quantiles of its non-missing values (empty list when it has none)."""
    sources_arr = np.asarray(sources, dtype=object)
    values = np.asarray(values, dtype=np.float64)
    out = {}
    for name in sorted(set(sources_arr.tolist())):
        v = values[(sources_arr == name) & ~np.isnan(values)]
        out[name] = np.quantile(v, np.linspace(0, 1, QUANTILES)).tolist() if len(v) else []
    return out


def percentile_from_quantiles(value: float | None, table: Sequence[float]) -> float:
    """Mid-rank position of ``value`` in a quantile table, in [0, 1]; NaN without a value or a table."""
    if value is None or not table or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    q = np.asarray(table)
    lo = np.searchsorted(q, value, "left")
    hi = np.searchsorted(q, value, "right")
    if hi == lo:  # strictly between two quantiles: interpolate
        return float(np.interp(value, q, np.linspace(0, 1, len(q))))
    return float((lo + hi - 1) / 2 / (len(q) - 1))


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _num(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    return math.nan if v is None else float(v)


def components(row: Mapping[str, Any], quantiles: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each component in [0, 1], NaN when the sample lacks it."""
    sharp, colour, jpeg = _num(row, "sharpness"), _num(row, "colorfulness"), _num(row, "jpeg_quality")
    border, text, lettering = _num(row, "border_fraction"), _num(row, "text_density"), _num(row, "text_area")
    grain, blocks = _num(row, "noise"), _num(row, "blockiness")
    art, aesthetic, fills = _num(row, "illustration"), _num(row, "aesthetic"), _num(row, "flat_share")
    edge, dbpct = _num(row, "edge_sharpness"), _num(row, "dbaesthetic_percentile")
    side = min(_num(row, "width"), _num(row, "height")) / max(
        1.0, _num(row, "upscale") if row.get("upscale") else 1.0
    )
    side /= max(1.0, _num(row, "bucket_upscale") if row.get("bucket_upscale") else 1.0)
    detail = math.nan
    if not math.isnan(sharp):
        detail = _clip01((math.log10(max(sharp, 1.0)) - math.log10(400.0)) / (4.0 - math.log10(400.0)))
        detail *= 1.0 - _clip01(grain / 5.0) if not math.isnan(grain) else 1.0
        detail *= _clip01(2.0 - blocks) if not math.isnan(blocks) else 1.0
    clean = math.nan
    if not (math.isnan(border) or math.isnan(text)):
        clean = _clip01(
            1.0 - border / 0.3 - text / 0.015 - (0.0 if math.isnan(lettering) else lettering / 0.05)
        )
    return {
        "score": percentile_from_quantiles(row.get("score"), quantiles.get("score", [])),
        "fav": percentile_from_quantiles(row.get("fav_count"), quantiles.get("fav_count", [])),
        "aesthetic": _clip01((aesthetic - 4.0) / 3.0) if not math.isnan(aesthetic) else math.nan,
        "dbaesthetic": _clip01(dbpct) if not math.isnan(dbpct) else math.nan,
        "learned": _num(row, "learned_score"),
        "illustration": _clip01((art - 0.5) / 0.5) if not math.isnan(art) else math.nan,
        "fills": _clip01((fills - 0.05) / 0.35) if not math.isnan(fills) else math.nan,
        "sharpness": detail,
        "edge": _clip01((edge - 0.5) / 0.25) if not math.isnan(edge) else math.nan,
        "resolution": _clip01((side - 256.0) / 768.0) if not math.isnan(side) else math.nan,
        "colorfulness": _clip01(colour / 80.0) if not math.isnan(colour) else math.nan,
        "jpeg": _clip01((jpeg - 40.0) / 55.0) if not math.isnan(jpeg) else math.nan,
        "clean": clean,
    }


def quality_score(
    row: Mapping[str, Any], quantiles: Mapping[str, Sequence[float]], cfg: QualityConfig
) -> float:
    """Weighted mean of the components the sample has; NaN when it has none."""
    parts = components(row, quantiles)
    total = weight = 0.0
    for name, value in parts.items():
        w = getattr(cfg, f"{name}_weight")
        if w > 0 and not math.isnan(value):
            total += w * value
            weight += w
    return total / weight if weight > 0 else math.nan


class LearnedScorer:
    """A TorchScript model given by path: RGB uint8 images -> one score each, in batches.

    Preprocessing is in the config: resize to ``scorer_size`` square (area interpolation), scale to
    [0, 1], normalise by ``scorer_mean`` / ``scorer_std``. TorchScript archives hold code and
    tensors, not pickled Python objects, so loading one runs nothing but the model.
    """

    def __init__(self, cfg: QualityConfig):
        import torch

        self.cfg = cfg
        self.torch = torch
        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(cfg.scorer, map_location=cfg.scorer_device).eval()
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(
                f"quality.scorer {cfg.scorer!r} is not a loadable TorchScript model: {exc}"
            ) from None
        self.mean = torch.tensor(cfg.scorer_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.scorer_std, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(self, images: Sequence[np.ndarray]) -> Any:
        s = self.cfg.scorer_size
        batch = np.stack([cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA) for img in images])
        x = self.torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(images), self.cfg.scorer_batch):
                x = self.preprocess(images[i : i + self.cfg.scorer_batch]).to(self.cfg.scorer_device)
                y = self.model(x).float().reshape(len(x), -1)[:, 0]
                if self.cfg.scorer_logits:
                    y = self.torch.sigmoid(y)
                out.append(y.cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.empty(0)
