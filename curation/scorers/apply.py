"""Scorer outputs into scan rows, and the filters that read them. No Ray (pipelines/scoring.py runs this).

A record with tags of its own (a Danbooru post, a folder image with a caption) keeps them: the
predictions are stored beside them and decide nothing. A record without any (a bare folder image)
is judged on the predictions: a predicted general tag in ``filters.banned_tags`` rejects it
(``predicted_banned_tag``), and, when it has no rating either, a predicted rating outside
``filters.ratings`` rejects it (``predicted_rating``; WD v3 and deepghs ratings are general /
sensitive / questionable / explicit, the new Danbooru era). With ``fill_tags`` its ``tags_general``
becomes the predicted tags, so tag balancing, the sample JSON and the W-net vocabulary see them too.

The deepghs classifiers judge pixels, like the ``[metrics]`` rules, so they judge every image
(``judge``): photo / 3D / not a painting -> ``not_illustration``, comic -> ``comic``, monochrome ->
``monochrome``, at stage ``scorer``. With a photo classifier configured the classical illustration
cut steps back by ``metrics.illustration_defer`` (``defer_illustration``): the images the pixel model
is unsure about are decided by the classifier instead of by a cliff at ``min_illustration``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from curation.filters import FilterConfig, rating_class, tag_set
from curation.metrics import MetricThresholds

from .deepghs import PHOTO_CLASSIFIERS
from .registry import Scorer


def score_images(
    rows: list[dict[str, Any]], kept: Sequence[tuple[int, np.ndarray]], scorers: Mapping[str, Scorer]
) -> None:
    """Run every scorer over the images of ``kept`` ((row index, pixels)) and store its columns."""
    if not kept:
        return
    images = [img for _, img in kept]
    for name, scorer in scorers.items():
        columns = scorer(images)
        for column, values in columns.items():
            if len(values) != len(kept):
                raise RuntimeError(
                    f"scorer {name} gave {len(values)} values of {column} for {len(kept)} images"
                )
            for (i, _), value in zip(kept, values, strict=True):
                rows[i][column] = value


def apply_predictions(row: dict[str, Any], filters: FilterConfig, fill_tags: bool) -> None:
    """Judge a kept row without tags (or rating) of its own on its predicted tags and rating."""
    if row.get("status") != "kept":
        return
    pred = row.get("pred_tags")
    own_tags = bool(tag_set(row))
    if pred is not None and not own_tags:
        probs = row.get("pred_tag_probs") or [float("nan")] * len(pred)
        hit = [(t, p) for t, p in zip(pred, probs, strict=True) if t in filters.banned_tags]
        if hit:
            shown = ", ".join(f"{t} ({p:.2f})" for t, p in hit[:5])
            row.update(status="rejected", stage="scorer", reason="predicted_banned_tag",
                       detail=f"no tags of its own; wd_tagger predicts banned tag(s): {shown}")  # fmt: skip
            return
    who, letter = (
        ("wd_tagger", row.get("pred_rating")) if row.get("pred_rating") else ("dbrating", row.get("dbrating"))
    )
    if letter and row.get("rating") is None:
        cls = rating_class(letter, "new")
        if cls not in filters.ratings:
            row.update(status="rejected", stage="scorer", reason="predicted_rating",
                       detail=f"no rating of its own; {who} predicts {letter!r} = {cls}, "
                              f"not in {list(filters.ratings)}")  # fmt: skip
            return
    if fill_tags and pred and not own_tags:
        row["tags_general"] = list(pred)


def judge(row: dict[str, Any], scorers: Mapping[str, Scorer]) -> str | None:
    """Reject a kept row on the first deciding scorer's verdict (stage ``scorer``); returns that scorer's name."""
    if row.get("status") != "kept":
        return None
    for name, scorer in scorers.items():
        decide = getattr(scorer, "decide", None)
        verdict = decide(row) if decide is not None else None
        if verdict:
            row.update(status="rejected", stage="scorer", reason=verdict[0], detail=f"{name}: {verdict[1]}")
            return name
    return None


def defer_illustration(metrics: MetricThresholds, scorer_names: Sequence[str]) -> MetricThresholds:
    """The ``[metrics]`` the scan applies: the illustration cut lowered by ``illustration_defer`` when a
    photo classifier is configured (it decides the images the pixel model is unsure about)."""
    if not any(n in PHOTO_CLASSIFIERS for n in scorer_names) or metrics.min_illustration <= 0:
        return metrics
    return replace(metrics, min_illustration=max(0.0, metrics.min_illustration - metrics.illustration_defer))
