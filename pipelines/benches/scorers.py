"""Learned scorers: images/s at the published model sizes (random weights: speed does not depend on them).

``wd_tagger`` is built with wd-vit-tagger-v3's shape (ViT-B/16 at 448, 10861 tags), ``aesthetic``
with the full CLIP ViT-L/14 tower + the LAION MLP, each from checkpoints written in the published
layout to a temporary folder. The inputs are corpus images as the scan hands them over (work copies,
long side <= 512). Reported per device: the preprocessing share (PIL padding / resizing on the CPU)
and the whole call, as medians over ``--repeats``, over one batch of ``--limit`` images (4 by
default). On a CUDA machine the GPU rows are added.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

from curation import scorers
from curation.decode import decode_image
from curation.metrics import work_copy
from curation.scorers import synthetic

from ..errors import UsageError
from ..paths import corpus_illustrations


def _images(folder: str, limit: int) -> list[np.ndarray]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    out = []
    for name in names[: limit or 4]:
        with open(os.path.join(folder, name), "rb") as fh:
            out.append(work_copy(decode_image(fh.read()).rgb))
    return out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, cuDNN autotune)
    times = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _bench(scorer: Any, prepare, imgs: list[np.ndarray], repeats: int) -> dict[str, float]:
    total = _time(lambda: scorer(imgs), repeats)
    pre = _time(lambda: [prepare(img) for img in imgs], repeats)
    return {
        "images_per_s": round(len(imgs) / total, 3),
        "ms_per_image": round(1000 * total / len(imgs), 1),
        "preprocess_ms_per_image": round(1000 * pre / len(imgs), 1),
    }


def run(args) -> dict[str, Any]:
    folder = args.corpus or corpus_illustrations()
    if not folder:
        raise UsageError(
            "the scorers bench needs images: pass --corpus or provide ../shared/corpus/illustrations"
        )
    imgs = _images(folder, args.limit)
    repeats = max(1, args.repeats)
    report: dict[str, Any] = {
        "images": len(imgs),
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        wd = os.path.join(tmp, "wd")
        rows = synthetic.wd_tag_rows(general=synthetic.WD_V3_TAGS - 4 - 10, character=10)
        synthetic.write_wd_tagger(wd, *synthetic.WD_VIT_V3, rows, random=False)
        aes = os.path.join(tmp, "aesthetic")
        synthetic.write_aesthetic(aes, {}, random=False)
        for device in devices:
            tagger = scorers.create("wd_tagger", weights=wd, device=device, batch_size=len(imgs))
            report[f"wd_tagger_vit_{device}"] = _bench(tagger, tagger.prepare, imgs, repeats)
            del tagger
            scorer = scorers.create("aesthetic", weights=aes, device=device, batch_size=len(imgs))
            report[f"aesthetic_{device}"] = _bench(scorer, scorer.pre.resize_crop, imgs, repeats)
            del scorer
    return report
