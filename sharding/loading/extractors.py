"""Which line drawing each drawn sample brings: one extractor always, or a draw among the sample's own.

The draw for batch ``j`` uses its own generator (``draw_rng(seed, EXTRACTOR, j)``), so it is as
reproducible as the rows the sampler drew, and independent of them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import LoaderError
from .population import Population
from .sampler import EXTRACTOR, draw_rng


class ExtractorChoice:
    """``choose(j, rows)``: the extractor of each row of batch ``j``; checked against the build when made."""

    def __init__(self, pop: Population, seed: int, extractor: str | None = None,
                 extractor_probs: Mapping[str, float] | None = None) -> None:  # fmt: skip
        self.pop, self.seed = pop, seed
        self.extractor, self.extractor_probs = extractor, dict(extractor_probs or {})
        names = sorted({n for ex in pop.extractor_names for n in ex})
        wanted = [extractor] if extractor else list(self.extractor_probs)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise LoaderError(
                f"extractor(s) {', '.join(unknown)} not in this build (it has: {', '.join(names)})"
            )
        if any((not isinstance(p, int | float)) or p < 0 for p in self.extractor_probs.values()):
            raise LoaderError(f"extractor_probs must be >= 0: {self.extractor_probs}")

    def choose(self, j: int, rows: np.ndarray) -> list[str]:
        """The extractor of each of ``rows`` (the rows of global batch ``j``)."""
        u = draw_rng(self.seed, EXTRACTOR, j).random(len(rows))
        chosen = []
        for r, x in zip(rows, u, strict=True):
            options = self.pop.extractors(r)
            if self.extractor:
                if self.extractor not in options:
                    raise LoaderError(f"sample {self.pop.key(r)} has no {self.extractor} line drawing")
                chosen.append(self.extractor)
                continue
            p = np.asarray(
                [self.extractor_probs.get(n, 0.0 if self.extractor_probs else 1.0) for n in options]
            )
            if p.sum() <= 0:
                raise LoaderError(
                    f"sample {self.pop.key(r)}: extractor_probs give its extractors {options} no weight"
                )
            chosen.append(
                options[min(int(np.searchsorted(np.cumsum(p) / p.sum(), x, side="right")), len(options) - 1)]
            )
        return chosen


__all__ = ["ExtractorChoice"]
