"""Run dghs-imgutils' own functions on image files and print their results as JSON (a child process).

``python -m tests.imgutils_reference MODELS_JSON IMAGE...`` with ``HF_HOME`` set to an offline hub
cache and ``HF_HUB_OFFLINE=1``: huggingface_hub reads both when it is imported, so the reference
runs in its own process, never in the test's (which has imported it already through timm).
``MODELS_JSON`` maps scorer name -> model folder name.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from imgutils.metrics import anime_dbaesthetic
    from imgutils.validate import (
        anime_classify_score,
        anime_dbrating_score,
        anime_real_score,
        get_monochrome_score,
    )
    from PIL import Image

    models = json.loads(argv[0])
    out = []
    for path in argv[1:]:
        with Image.open(path) as img:
            img.load()
            row = {
                "anime_real": anime_real_score(img, models["anime_real"]),
                "anime_classify": anime_classify_score(img, models["anime_classify"]),
                "monochrome": get_monochrome_score(img, models["monochrome"]),
                "dbrating": anime_dbrating_score(img, models["dbrating"]),
            }
            label, percentile, score = anime_dbaesthetic(
                img, models["dbaesthetic"], fmt=("label", "percentile", "score")
            )
            row["dbaesthetic"] = {"label": label, "percentile": float(percentile), "score": float(score)}
        out.append(row)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
