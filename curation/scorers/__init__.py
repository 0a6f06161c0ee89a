"""Learned scorers: ``curation.scorers.available()`` and ``create(name, weights=None, device="cpu", **opts)``.

Each fills scan columns (``aesthetic``; ``pred_tags``, ``pred_tag_probs``, ``pred_rating``; the
deepghs classifiers' ``p_real``, ``anime_class``, ``p_monochrome``, ``dbaesthetic_*``, ``dbrating``)
for a batch of decoded images; the build runs them in a Ray actor stage (pipelines/scoring.py).
timm checkpoints (``wd_tagger``, ``aesthetic``) run through torch, the deepghs ones through onnxruntime.
"""

from . import aesthetic as _aesthetic  # noqa: F401  (registers "aesthetic")
from . import deepghs as _deepghs  # noqa: F401  (registers anime_real, anime_classify, monochrome, dbaesthetic, dbrating)
from . import wd_tagger as _wd_tagger  # noqa: F401  (registers "wd_tagger")
from .registry import Scorer, ScorerInfo, UnknownScorerError, available, check_options, create, info

__all__ = ["Scorer", "ScorerInfo", "UnknownScorerError", "available", "check_options", "create", "info"]
