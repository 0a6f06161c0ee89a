"""Small members of each scorer's architecture family, written in the published layout (tests only)."""

from __future__ import annotations

from typing import Any

from curation.scorers import synthetic
from curation.scorers.synthetic import CLIP_MEAN, CLIP_STD  # noqa: F401  (the tests' reference transforms)

# One small member of each WD v3 family: architecture and model_args as in the published
# config.json (img_size 448; the ViT without a class token, average pooled), made narrow and shallow.
WD_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": (synthetic.WD_VIT_V3[0], {**synthetic.WD_VIT_V3[1], "embed_dim": 32, "depth": 1, "num_heads": 2}),
    "swinv2": ("swinv2_base_window8_256", {"img_size": 448, "window_size": 14, "embed_dim": 8,
                                           "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}),
    "convnext": ("convnext_base", {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}),
    "eva02": ("eva02_large_patch14_448", {"embed_dim": 32, "depth": 1, "num_heads": 2}),
}  # fmt: skip
AESTHETIC_TOWER_ARGS = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def write_wd_tagger(folder: str, variant: str, seed: int = 0) -> dict[str, Any]:
    arch, args = WD_VARIANTS[variant]
    rows = synthetic.wd_tag_rows(general=24, character=3) + [("monochrome", 0)]
    return synthetic.write_wd_tagger(folder, arch, args, rows, seed)


def write_aesthetic(folder: str, seed: int = 0) -> dict[str, Any]:
    return synthetic.write_aesthetic(folder, AESTHETIC_TOWER_ARGS, seed)
