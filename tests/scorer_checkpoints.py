"""Seeded random-weight checkpoints in the published layouts of the learned scorers (tests only).

The real files are hundreds of MB and the hubs are unreachable here, so each writer builds a small
member of the same timm architecture family (fewer and narrower layers, set through ``model_args``
in ``config.json`` exactly where the published file puts the real ones) and saves it the way it
is published: ``config.json`` + ``model.safetensors`` (+ ``selected_tags.csv`` / the MLP ``.pth``).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import torch

# One small member of each WD v3 family: architecture and model_args as in the published
# config.json (img_size 448; the ViT without a class token, average pooled), made narrow and shallow.
WD_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("vit_base_patch16_224", {"img_size": 448, "class_token": False, "global_pool": "avg",
                                     "fc_norm": False, "act_layer": "gelu_tanh",
                                     "embed_dim": 32, "depth": 1, "num_heads": 2}),
    "swinv2": ("swinv2_base_window8_256", {"img_size": 448, "window_size": 14, "embed_dim": 8,
                                           "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}),
    "convnext": ("convnext_base", {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}),
    "eva02": ("eva02_large_patch14_448", {"embed_dim": 32, "depth": 1, "num_heads": 2}),
}  # fmt: skip

RATINGS = ["general", "sensitive", "questionable", "explicit"]
WD_PRETRAINED_CFG = {"custom_load": False, "input_size": [3, 448, 448], "fixed_input_size": True,
                     "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                     "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # fmt: skip
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def randomise(model: torch.nn.Module, seed: int, scale: float = 0.3) -> torch.nn.Module:
    """Every parameter seeded-normal, so outputs spread (timm's init leaves heads near zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * scale / max(1.0, p.shape[-1] ** 0.5 / 4))
    return model.eval()


def wd_tag_names(general: int = 24, character: int = 3) -> list[tuple[str, int]]:
    rows = [(r, 9) for r in RATINGS] + [(f"tag_{i}", 0) for i in range(general)]
    rows[6:6] = [(f"character_{i}", 4) for i in range(character)]  # categories interleave in the real file
    rows.append(("monochrome", 0))
    return rows


def write_wd_tagger(folder: str, variant: str, seed: int = 0) -> dict[str, Any]:
    """A WD v3 tagger folder; returns its config.json as written."""
    import timm
    from safetensors.torch import save_file

    arch, args = WD_VARIANTS[variant]
    rows = wd_tag_names()
    os.makedirs(folder, exist_ok=True)
    model = randomise(timm.create_model(arch, pretrained=False, num_classes=len(rows), **args), seed)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, "model.safetensors")
    )
    cfg = {"architecture": arch, "num_classes": len(rows), "num_features": getattr(model, "num_features", 0),
           "global_pool": args.get("global_pool", "avg"), "model_args": args,
           "pretrained_cfg": {**WD_PRETRAINED_CFG, "num_classes": len(rows)}}  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    with open(os.path.join(folder, "selected_tags.csv"), "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat) in enumerate(rows):
            out.writerow([1000 + i, name, cat, 500 - i])
    return json.loads(json.dumps(cfg))


AESTHETIC_TOWER_ARGS = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def write_aesthetic(folder: str, seed: int = 0) -> dict[str, Any]:
    """timm's vit_large_patch14_clip_224.openai layout (narrow, shallow) + the LAION MLP state dict."""
    import timm
    from safetensors.torch import save_file

    from curation.scorers.aesthetic import MLP_FILE, mlp

    os.makedirs(folder, exist_ok=True)
    tower = randomise(
        timm.create_model(
            "vit_large_patch14_clip_224", pretrained=False, num_classes=768, **AESTHETIC_TOWER_ARGS
        ),
        seed,
    )
    save_file(
        {k: v.contiguous() for k, v in tower.state_dict().items()}, os.path.join(folder, "model.safetensors")
    )
    cfg = {"architecture": "vit_large_patch14_clip_224", "num_classes": 768, "num_features": 32,
           "global_pool": "token", "model_args": AESTHETIC_TOWER_ARGS,
           "pretrained_cfg": {"tag": "openai", "custom_load": False, "input_size": [3, 224, 224],
                              "fixed_input_size": True, "interpolation": "bicubic", "crop_pct": 1.0,
                              "crop_mode": "center", "mean": CLIP_MEAN, "std": CLIP_STD, "num_classes": 768,
                              "first_conv": "patch_embed.proj", "classifier": "head"}}  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    head = mlp(768)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # gain 3 per layer: unit-norm embeddings must move the score visibly
        for lin in (m for m in head.layers if isinstance(m, torch.nn.Linear)):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 3 / lin.in_features**0.5)
            lin.bias.zero_()
        head.layers[-1].bias.fill_(5.0)  # centred on the LAION scale's middle
    torch.save(head.state_dict(), os.path.join(folder, MLP_FILE))
    return cfg
