"""Seeded random-weight checkpoints in the scorers' published layouts, for the tests and the bench.

The real files are hundreds of MB and the hubs may be unreachable, so these write the same files
(``config.json`` + ``model.safetensors`` + ``selected_tags.csv`` / the MLP ``.pth``) from a timm
architecture built with random weights. ``model_args`` go into ``config.json`` exactly where the
published file puts the real ones, so a small member of an architecture family loads like the real one.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

RATINGS = ("general", "sensitive", "questionable", "explicit")
WD_PRETRAINED_CFG = {"custom_load": False, "input_size": [3, 448, 448], "fixed_input_size": True,
                     "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                     "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # fmt: skip
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# The published tagger's shape: wd-vit-tagger-v3 (10861 rows: 4 ratings, then general and character tags)
WD_VIT_V3 = ("vit_base_patch16_224", {"img_size": 448, "class_token": False, "global_pool": "avg",
                                      "fc_norm": False, "act_layer": "gelu_tanh"})  # fmt: skip
WD_V3_TAGS = 10861


def randomise(model: Any, seed: int, scale: float = 0.3) -> Any:
    """Every parameter seeded-normal, so outputs spread (timm's init leaves heads near zero)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * scale / max(1.0, p.shape[-1] ** 0.5 / 4))
    return model.eval()


def wd_tag_rows(general: int, character: int) -> list[tuple[str, int]]:
    """selected_tags.csv rows: the four ratings (category 9), general (0) and character (4) tags interleaved."""
    rows = [(r, 9) for r in RATINGS] + [(f"tag_{i}", 0) for i in range(general)]
    rows[6:6] = [(f"character_{i}", 4) for i in range(character)]
    return rows


def _save_model(model: Any, folder: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(folder, "model.safetensors")
    )


def write_wd_tagger(folder: str, architecture: str, model_args: dict[str, Any], rows: list[tuple[str, int]],
                    seed: int = 0, random: bool = True) -> dict[str, Any]:  # fmt: skip
    """A WD v3 tagger folder; ``random=False`` keeps timm's own init (faster, for timing only)."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=len(rows), **model_args)
    _save_model(randomise(model, seed) if random else model.eval(), folder)
    cfg = {"architecture": architecture, "num_classes": len(rows),
           "num_features": getattr(model, "num_features", 0), "global_pool": model_args.get("global_pool", "avg"),
           "model_args": model_args, "pretrained_cfg": {**WD_PRETRAINED_CFG, "num_classes": len(rows)}}  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    with open(os.path.join(folder, "selected_tags.csv"), "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat) in enumerate(rows):
            out.writerow([1000 + i, name, cat, 500 - i])
    return json.loads(json.dumps(cfg))


def write_aesthetic(
    folder: str, model_args: dict[str, Any], seed: int = 0, random: bool = True
) -> dict[str, Any]:
    """timm's vit_large_patch14_clip_224.openai layout (``model_args`` may shrink it) + the LAION MLP."""
    import timm
    import torch

    from .aesthetic import MLP_FILE, mlp

    torch.manual_seed(seed)
    tower = timm.create_model("vit_large_patch14_clip_224", pretrained=False, num_classes=768, **model_args)
    _save_model(randomise(tower, seed) if random else tower.eval(), folder)
    cfg = {"architecture": "vit_large_patch14_clip_224", "num_classes": 768,
           "num_features": model_args.get("embed_dim", 1024), "global_pool": "token", "model_args": model_args,
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
