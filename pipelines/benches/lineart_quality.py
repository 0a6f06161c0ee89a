"""Line drawings against real line art: per extractor edge F1 (2 px, thinned), Chamfer, ink ratio
and the pair-quality drop rate on the shared illustrations and the calibration keep images.

The same scorecard as ``linepairs extract --compare`` (pipelines/scorecard.py), as JSON. Learned
extractors use the real checkpoints in ../shared/weights or the weights cache; those without
weights here are listed with a note. ``$LINEPAIRS_BENCH_EXTRACTORS`` (comma-separated) limits the
extractors; ``--limit`` the images per drop set.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import lineart
from pipelines import scorecard

from ..errors import UsageError
from ..paths import shared_dir


def run(args) -> dict[str, Any]:
    shared = shared_dir()
    if not shared or not os.path.isdir(os.path.join(shared, "corpus")):
        raise UsageError(
            "lineart_quality needs the shared folder (../shared or $LINEPAIRS_SHARED) with corpus/"
        )
    wanted = os.environ.get("LINEPAIRS_BENCH_EXTRACTORS")
    names = [n for n in wanted.split(",") if n] if wanted else lineart.available()
    unknown = sorted(set(names) - set(lineart.available()))
    if unknown:
        raise UsageError(f"$LINEPAIRS_BENCH_EXTRACTORS: unknown extractor(s) {', '.join(unknown)}")
    start = time.perf_counter()
    card = scorecard.score(
        scorecard.candidates(names, shared), shared, limit=max(0, args.limit), keep_drawings=False,
        progress=lambda n: print(f"bench: lineart_quality {n} ...", file=sys.stderr, flush=True),
    )  # fmt: skip
    report = scorecard.to_json(card)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report
