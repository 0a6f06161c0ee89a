"""``wd_tagger``: SmilingWolf's WD v3 taggers (vit, swinv2, convnext, eva02-large, vit-large).

Published files (Hugging Face ``SmilingWolf/wd-<variant>-tagger-v3``, timm layout):
``config.json`` (architecture, model_args, pretrained_cfg), ``model.safetensors`` and
``selected_tags.csv`` (``tag_id,name,category,count``; category 9 = rating, 0 = general,
4 = character; row i is output i).

Preprocessing, as the model card's timm example and the tagger Space do it: flatten alpha on
white (our decoder already does), pad to a square on white with the image centred
(``(side - w) // 2``), timm's eval transform of ``pretrained_cfg`` (PIL bicubic to 448, scale to
[0, 1], normalise by mean 0.5 / std 0.5, so [-1, 1]), then channel order RGB -> BGR. Outputs are
logits; a sigmoid gives each tag's probability.

Output columns: ``pred_tags`` / ``pred_tag_probs`` (general tags with probability >= threshold,
most probable first) and ``pred_rating`` (g/s/q/e: the most probable rating row).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any

import numpy as np

from groundwork.checkpoints import WeightsError

from .registry import register
from .timm_layout import Preprocess, build_model, chunks, load_strict, read_config, resolve_file

VARIANTS = ("vit", "swinv2", "convnext", "eva02_large", "vit_large")
RATING_LETTERS = {"general": "g", "sensitive": "s", "questionable": "q", "explicit": "e"}
GENERAL, CHARACTER, RATING = 0, 4, 9  # selected_tags.csv categories
FILES = ("config.json", "model.safetensors", "selected_tags.csv")


def repo_of(variant: str) -> str:
    return f"SmilingWolf/wd-{variant.replace('_', '-')}-tagger-v3"


def read_labels(path: str) -> tuple[list[str], np.ndarray]:
    """Tag names and categories of ``selected_tags.csv``, in output order."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise WeightsError(f"{path}: not a readable CSV ({exc})") from None
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise WeightsError(f"{path}: expected columns tag_id,name,category,count")
    try:
        categories = np.array([int(r["category"]) for r in rows], dtype=np.int64)
    except (TypeError, ValueError):
        raise WeightsError(f"{path}: a category is not an integer") from None
    names = [r["name"] for r in rows]
    unknown = sorted({names[i] for i in np.flatnonzero(categories == RATING)} - set(RATING_LETTERS))
    if unknown:
        raise WeightsError(f"{path}: unknown rating row(s) {unknown}; known: {sorted(RATING_LETTERS)}")
    return names, categories


def _check(opts: dict[str, Any]) -> None:
    if opts["variant"] not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {opts['variant']!r}")
    if not 0 < opts["threshold"] < 1:
        raise ValueError(f"threshold must be within (0, 1), got {opts['threshold']}")
    if opts["batch_size"] < 1:
        raise ValueError("batch_size must be >= 1")


class WDTagger:
    name = "wd_tagger"
    version = "1"
    columns = ("pred_tags", "pred_tag_probs", "pred_rating")

    def __init__(self, weights: str | None, device: str, variant: str, threshold: float, batch_size: int):
        import torch

        repo = repo_of(variant)
        folder = repo.split("/")[1]
        paths = {
            f: resolve_file(weights, folder, f, f"https://huggingface.co/{repo}/resolve/main/{f}")
            for f in FILES
        }
        what = f"wd_tagger {paths['model.safetensors']}"
        cfg = read_config(paths["config.json"])
        self.names, categories = read_labels(paths["selected_tags.csv"])
        if cfg["num_classes"] != len(self.names):
            raise WeightsError(
                f"{what}: config.json has {cfg['num_classes']} classes but selected_tags.csv {len(self.names)} rows"
            )
        self.general = np.flatnonzero(categories == GENERAL)
        self.rating = np.flatnonzero(categories == RATING)
        self.model = build_model(cfg, what).eval()
        self.files = {f: "" for f in FILES}
        self.files["model.safetensors"] = load_strict(self.model, paths["model.safetensors"], what)
        from groundwork.files import sha256_file

        for f in ("config.json", "selected_tags.csv"):
            self.files[f] = sha256_file(paths[f])
        self.model.to(device)
        self.pre = Preprocess.from_pretrained_cfg(cfg["pretrained_cfg"], what)
        self.device, self.threshold, self.batch_size = device, threshold, batch_size
        # the repo only when the files came from the cache by variant: a folder's config.json says what it is
        self.details = {"repo": None if weights else repo, "architecture": cfg["architecture"],
                        "threshold": threshold, "tags": len(self.names)}  # fmt: skip
        self.torch = torch

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """Pad to a centred white square, then timm's resize / crop: ``S x S x 3`` uint8 RGB."""
        h, w = rgb.shape[:2]
        side = max(h, w)
        canvas = np.full((side, side, 3), 255, np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = rgb
        return self.pre.resize_crop(canvas)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``N x tags`` float32 sigmoid outputs."""
        torch = self.torch
        out = []
        with torch.inference_mode():
            for part in chunks(images, self.batch_size):
                batch = torch.from_numpy(np.stack([self.prepare(img) for img in part])).to(self.device)
                x = self.pre.normalise(batch)[:, [2, 1, 0]]  # the taggers were trained on BGR
                out.append(torch.sigmoid(self.model(x).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.names)), np.float32)

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        probs = self.probabilities(images)
        tags, tag_probs, ratings = [], [], []
        for p in probs:
            g = self.general[p[self.general] >= self.threshold]
            g = g[np.argsort(-p[g], kind="stable")]
            tags.append([self.names[i] for i in g])
            tag_probs.append(p[g].astype(np.float32).tolist())
            ratings.append(
                RATING_LETTERS[self.names[self.rating[np.argmax(p[self.rating])]]]
                if len(self.rating)
                else None
            )
        return {"pred_tags": tags, "pred_tag_probs": tag_probs, "pred_rating": ratings}


@register(
    "wd_tagger",
    summary="WD v3 tagger (timm layout): predicted general tags over a threshold and a g/s/q/e rating",
    columns=WDTagger.columns,
    defaults={"variant": "vit", "threshold": 0.35, "batch_size": 16},
    check=_check,
)
def wd_tagger(weights: str | None = None, device: str = "cpu", **opts: Any) -> WDTagger:
    return WDTagger(weights, device, **opts)
