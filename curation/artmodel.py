"""P(drawn illustration) from a few classical features: a small L2-regularised logistic regression.

Thresholds alone separate greyscale, blur, noise, blocking, text and panels; they do not separate
a drawn illustration from a photograph or a 3D render (docs/curation.md). This model does that
one job, on the images that every other [metrics] rule lets through. Its coefficients ship as
``artmodel.json`` next to this file, naming the data it was fitted on and its cross-validated
figures; ``linepairs calibrate --fit-model`` refits it, ``--cv K`` measures it out of fold.

Plain NumPy: the model is a weight and a bias; a library would add nothing but a dependency.

The cut (``[metrics] min_illustration``, 0.5) is a cliff for an image the model is unsure about;
with a learned photo classifier configured (``anime_real``, ``anime_classify``) the pixel rule
steps back by ``illustration_defer`` below it and the classifier decides those images
(``curation.scorers.apply.defer_illustration``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MODEL_PATH = os.path.join(os.path.dirname(__file__), "artmodel.json")


# Feature -> transform. Out of fold on the 151-image set (5 folds x 10 fold seeds, docs/curation.md)
# most other classical measures either added nothing or learned the calibration set's look (grain
# "meant" illustration because its GAN busts are grainy; more colours "meant" illustration) and
# cost shared illustrations it never saw. Two say what a curator would: an inked or cel edge is
# abrupt, a lens-spread edge is not; and a drawn line runs on as one smooth curve, where a photo's
# edges break into corners and texture. The second keeps every shared illustration and, under
# JPEG, halving and grain, loses fewer of them than the first alone.
FEATURES: dict[str, Any] = {
    "edge_sharpness": float,
    "edge_coherence": float,
}


def feature_vector(values: Mapping[str, Any]) -> np.ndarray | None:
    """The model's inputs from a scan row; None when any is missing."""
    out = []
    for name, transform in FEATURES.items():
        v = values.get(name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        out.append(transform(float(v)))
    return np.asarray(out, np.float64)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 4000) -> dict[str, Any]:
    """Logistic regression on standardised features by gradient descent; ``y``: 1 = illustration.

    ``l2`` is the ridge penalty on the standardised weights (in units of samples): with ~90
    images it keeps the weights small enough not to memorise single images.
    Classes are not re-weighted: weighing keeps and rejects half each rejected a fifth of the keeps
    out of fold.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / std
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(steps):  # convex: a fixed step of 0.5 converges on standardised inputs
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        w -= 0.5 * (z.T @ (p - y) + l2 * w) / len(y)
        b -= 0.5 * float((p - y).mean())
    return {
        "features": list(FEATURES),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "weights": w.tolist(),
        "bias": b,
        "l2": l2,
    }


def predict(model: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    z = (np.asarray(x, np.float64) - np.asarray(model["mean"])) / np.asarray(model["std"])
    return 1.0 / (1.0 + np.exp(-(z @ np.asarray(model["weights"]) + float(model["bias"]))))


def cross_val_predict(x: np.ndarray, y: np.ndarray, folds: int, seed: int = 0, l2: float = 1.0) -> np.ndarray:
    """Out-of-fold probabilities: every sample scored by a model fitted without it (stratified folds)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), np.int64)
    for label in np.unique(y):  # stratified: each fold gets its share of both classes
        idx = rng.permutation(np.flatnonzero(y == label))
        fold[idx] = np.arange(len(idx)) % folds
    out = np.full(len(y), np.nan)
    for k in range(folds):
        test = fold == k
        if test.any() and len(np.unique(y[~test])) == 2:
            out[test] = predict(fit(x[~test], y[~test], l2), x[test])
    return out


@functools.lru_cache(maxsize=4)
def load_model(path: str = MODEL_PATH) -> dict[str, Any] | None:
    """The shipped model (None when the file is absent: the rule is then skipped, never guessed)."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        model = json.load(fh)
    if model.get("features") != list(FEATURES):
        raise ValueError(f"{path}: features {model.get('features')} != {list(FEATURES)}; refit it")
    return model


def illustration_probability(values: Mapping[str, Any], model: Mapping[str, Any] | None = None) -> float:
    """P(drawn illustration) of one scan row; NaN without a model or a feature."""
    model = model if model is not None else load_model()
    x = feature_vector(values)
    if model is None or x is None:
        return math.nan
    return float(predict(model, x[None, :])[0])


def design(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(feature matrix, index of the rows that have every feature)."""
    vectors = [(i, feature_vector(r)) for i, r in enumerate(rows)]
    kept = [(i, v) for i, v in vectors if v is not None]
    if not kept:
        return np.zeros((0, len(FEATURES))), np.zeros(0, np.int64)
    return np.stack([v for _, v in kept]), np.asarray([i for i, _ in kept], np.int64)
