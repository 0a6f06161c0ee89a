"""The five deepghs classifiers as scorers: what each fills, and what it decides when configured.

| scorer | repo / default model (published accuracy on its own test set) | columns | decision |
|---|---|---|---|
| ``anime_real`` | deepghs/anime_real_cls, mobilenetv3_v1.4_dist (98.78 %, AUC 0.997) | ``p_real`` | ``not_illustration`` when P(real) >= ``threshold`` |
| ``anime_classify`` | deepghs/anime_classification, mobilenetv3_v1.5_dist (93.90 %, AUC 0.994) | ``anime_class``, ``p_3d``, ``p_comic``, ``p_not_painting`` | ``not_illustration`` (3d, not_painting), ``comic`` when that class's P >= ``threshold`` |
| ``monochrome`` | deepghs/monochrome_detect, mobilenetv3_large_100_dist_safe2 (the "safe" variants trade recall for precision; 94.6-95.6 % across the repo) | ``p_monochrome`` | ``monochrome`` when P >= ``threshold`` |
| ``dbaesthetic`` | deepghs/anime_aesthetic, swinv2pv3_v0_448_ls0.2_x (7 tiers: 40.9 % exact, AUC 0.821) | ``dbaesthetic_score``, ``dbaesthetic_percentile``, ``dbaesthetic_tier`` | none: the percentile feeds the quality score |
| ``dbrating`` | deepghs/anime_dbrating, mobilenetv3_large_100_v0_ls0.2 | ``dbrating`` (g/s/q/e), ``dbrating_p`` | as ``wd_tagger``'s rating: only a record without a rating of its own (curation/scorers/apply.py) |

The default thresholds are 0.5: the published accuracies are argmax accuracies, and for a
softmax over two classes (anime/real, monochrome/normal) 0.5 *is* the argmax; for the five
classes of ``anime_classify`` a class at >= 0.5 is the argmax too, so every decision is the
published classifier's own call, with its published error rate. Raise a threshold to reject less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from groundwork.checkpoints import WeightsError

from .onnx_classify import MODEL_FILE, OnnxClassifier
from .registry import register

RATING_LETTERS = {"general": "g", "sensitive": "s", "questionable": "q", "explicit": "e"}
AESTHETIC_TIERS = ("worst", "low", "normal", "good", "great", "best", "masterpiece")
# imgutils' percentile -> tier label mapping (imgutils.metrics.dbaesthetic._DEFAULT_LABEL_MAPPING)
TIER_FLOORS = (("masterpiece", 0.95), ("best", 0.85), ("great", 0.75), ("good", 0.5), ("normal", 0.25),
               ("low", 0.1), ("worst", 0.0))  # fmt: skip
SAMPLES_FILE = "samples.npz"


def _check(opts: dict[str, Any]) -> None:
    if opts["batch_size"] < 1:
        raise ValueError("batch_size must be >= 1")
    if "threshold" in opts and not 0 < opts["threshold"] <= 1:
        raise ValueError(f"threshold must be within (0, 1], got {opts['threshold']}")
    if not opts["model"] or "/" in opts["model"] or opts["model"].startswith("."):
        raise ValueError(f"model must be a model folder name of the repo, got {opts['model']!r}")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


class _Base:
    """Shared shape of the deepghs scorers: one ``OnnxClassifier``, its files and details."""

    version = "1"
    main_file = MODEL_FILE  # build.json's weights_sha256
    repo = ""
    columns: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def __init__(self, weights: str | None, device: str, model: str, batch_size: int, threshold: float = 0.5):
        self.model = OnnxClassifier(self.repo, model, weights, device, batch_size, self.extra)
        self.threshold = threshold
        self.files = dict(self.model.files)
        self.details = {**self.model.details, "threshold": threshold}
        self.check_labels()

    def check_labels(self) -> None:
        pass

    def need(self, *labels: str) -> None:
        missing = [x for x in labels if x not in self.model.labels]
        if missing:
            raise WeightsError(
                f"{self.name} {self.model.paths[MODEL_FILE]}: meta.json labels {self.model.labels} lack {missing}"
            )


class AnimeReal(_Base):
    name = "anime_real"
    repo = "deepghs/anime_real_cls"
    columns = ("p_real",)

    def check_labels(self) -> None:
        self.need("anime", "real")

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        return {"p_real": self.model.column(self.model.probabilities(images), "real")}

    def decide(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        p = row.get("p_real")
        if not _missing(p) and p >= self.threshold:
            return "not_illustration", f"P(real) {p:.3f} >= {self.threshold:g}"
        return None


class AnimeClassify(_Base):
    name = "anime_classify"
    repo = "deepghs/anime_classification"
    columns = ("anime_class", "p_3d", "p_comic", "p_not_painting")
    REASONS = (("p_3d", "3d", "not_illustration"), ("p_not_painting", "not_painting", "not_illustration"),
               ("p_comic", "comic", "comic"))  # fmt: skip

    def check_labels(self) -> None:
        self.need("3d", "comic", "illustration")  # not_painting came with v1.4; older models lack it

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        probs = self.model.probabilities(images)
        return {
            "anime_class": [self.model.labels[i] for i in probs.argmax(axis=1)] if len(probs) else [],
            **{col: self.model.column(probs, label) for col, label, _ in self.REASONS},
        }

    def decide(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        for col, label, reason in self.REASONS:
            p = row.get(col)
            if not _missing(p) and p >= self.threshold:
                return reason, f"P({label}) {p:.3f} >= {self.threshold:g}"
        return None


class Monochrome(_Base):
    name = "monochrome"
    repo = "deepghs/monochrome_detect"
    columns = ("p_monochrome",)

    def check_labels(self) -> None:
        self.need("monochrome")

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        return {"p_monochrome": self.model.column(self.model.probabilities(images), "monochrome")}

    def decide(self, row: Mapping[str, Any]) -> tuple[str, str] | None:
        p = row.get("p_monochrome")
        if not _missing(p) and p >= self.threshold:
            return "monochrome", f"P(monochrome) {p:.3f} >= {self.threshold:g}"
        return None


class DBAesthetic(_Base):
    """Expected tier index (0 worst .. 6 masterpiece) under the softmax, its percentile and tier label.

    As imgutils' ``AestheticModel``: score = sum_i P(tier_i) * i; percentile by linear interpolation
    in the model's ``samples.npz`` (``arr_0``: row 0 sorted scores, row 1 their percentiles), clipped
    to the table's range; the label from fixed percentile floors.
    """

    name = "dbaesthetic"
    repo = "deepghs/anime_aesthetic"
    columns = ("dbaesthetic_score", "dbaesthetic_percentile", "dbaesthetic_tier")
    extra = (SAMPLES_FILE,)

    def check_labels(self) -> None:
        self.need(*AESTHETIC_TIERS)
        path = self.model.paths[SAMPLES_FILE]
        try:
            with np.load(path, allow_pickle=False) as npz:  # arrays only: nothing is unpickled
                table = np.asarray(npz["arr_0"], np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise WeightsError(f"{path}: not a samples table ({exc})") from None
        if table.ndim != 2 or table.shape[0] != 2 or table.shape[1] < 2 or np.any(np.diff(table[0]) < 0):
            raise WeightsError(f"{path}: arr_0 must be 2 x N with sorted scores in row 0, got {table.shape}")
        self.x, self.y = table[0], table[1]
        self.index = np.array([AESTHETIC_TIERS.index(label) for label in self.model.labels], np.float64)

    def percentile(self, score: float) -> float:
        """imgutils' ``score_to_percentile``: interpolate between the two samples around ``score``."""
        x, y = self.x, self.y
        i = int(np.searchsorted(x, np.clip(score, x.min(), x.max())))
        if i < len(x) - 1:
            x0, y0, x1, y1 = x[i], y[i], x[i + 1], y[i + 1]
            if np.isclose(x1, x0):
                return float(y[i])
            return float(np.clip((score - x0) / (x1 - x0) * (y1 - y0) + y0, y.min(), y.max()))
        return float(y[i])

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        probs = self.model.probabilities(images).astype(np.float64)
        scores = (probs * self.index).sum(axis=1)
        pct = [self.percentile(float(s)) for s in scores]
        tiers = [next(label for label, floor in TIER_FLOORS if p >= floor) for p in pct]
        return {
            "dbaesthetic_score": scores.astype(np.float32).tolist(),
            "dbaesthetic_percentile": np.asarray(pct, np.float32).tolist(),
            "dbaesthetic_tier": tiers,
        }


class DBRating(_Base):
    name = "dbrating"
    repo = "deepghs/anime_dbrating"
    columns = ("dbrating", "dbrating_p")

    def check_labels(self) -> None:
        self.need(*RATING_LETTERS)

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        probs = self.model.probabilities(images)
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
        return {
            "dbrating": [RATING_LETTERS[self.model.labels[i]] for i in best],
            "dbrating_p": [float(probs[j, i]) for j, i in enumerate(best)],
        }


def _factory(cls: type[_Base], model: str, decides: bool, summary: str) -> None:
    defaults: dict[str, Any] = {"model": model, "batch_size": 16}
    if decides:
        defaults["threshold"] = 0.5

    @register(cls.name, summary=summary, columns=cls.columns, defaults=defaults, check=_check)
    def create(weights: str | None = None, device: str = "cpu", **opts: Any) -> _Base:
        return cls(weights, device, **opts)


_factory(AnimeReal, "mobilenetv3_v1.4_dist", True, "deepghs anime/real (ONNX): P(real); rejects photos")
_factory(AnimeClassify, "mobilenetv3_v1.5_dist", True,
         "deepghs 3d / bangumi / comic / illustration / not_painting (ONNX); rejects 3D, non-paintings, comics")  # fmt: skip
_factory(Monochrome, "mobilenetv3_large_100_dist_safe2", True, "deepghs monochrome (ONNX): P(monochrome)")
_factory(DBAesthetic, "swinv2pv3_v0_448_ls0.2_x", False,
         "deepghs Danbooru aesthetic (ONNX): tier, score and percentile; the percentile feeds the quality")  # fmt: skip
_factory(DBRating, "mobilenetv3_large_100_v0_ls0.2", False, "deepghs Danbooru rating (ONNX): g/s/q/e")
PHOTO_CLASSIFIERS = ("anime_real", "anime_classify")  # the ones the illustration cut defers to
