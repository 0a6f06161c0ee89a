"""Tiny ONNX classifiers with the published deepghs signatures, laid out as the Hugging Face hub caches them.

The real files are 17-260 MB behind a hub this machine cannot reach, so the tests export a small
seeded random CNN with each published model's interface -- one input ``input`` ``[batch, 3, S, S]``
(S = 384, 448 for the aesthetic SwinV2), one softmaxed output ``output`` ``[batch, classes]`` --
and its ``meta.json`` (labels in the published order) and, for the aesthetic model, a
``samples.npz`` score -> percentile table. ``hub_cache`` writes them where ``huggingface_hub``
looks in offline mode: ``HF_HOME/hub/models--deepghs--REPO/{refs/main, snapshots/COMMIT/MODEL/...}``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# name -> (repo, default model, labels in the published order, input side)
PUBLISHED: dict[str, tuple[str, str, list[str], int]] = {
    "anime_real": ("deepghs/anime_real_cls", "mobilenetv3_v1.4_dist", ["anime", "real"], 384),
    "anime_classify": ("deepghs/anime_classification", "mobilenetv3_v1.5_dist",
                       ["3d", "bangumi", "comic", "illustration", "not_painting"], 384),
    "monochrome": ("deepghs/monochrome_detect", "mobilenetv3_large_100_dist_safe2", ["monochrome", "normal"], 384),
    "dbaesthetic": ("deepghs/anime_aesthetic", "swinv2pv3_v0_448_ls0.2_x",
                    ["masterpiece", "best", "great", "good", "normal", "low", "worst"], 448),
    "dbrating": ("deepghs/anime_dbrating", "mobilenetv3_large_100_v0_ls0.2",
                 ["general", "sensitive", "questionable", "explicit"], 384),
}  # fmt: skip


def export_classifier(path: str, classes: int, side: int, seed: int, dynamic_side: bool = False) -> None:
    """A seeded random CNN + softmax exported to ONNX with deepghs' names and axes."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2)
            )
            self.head = torch.nn.Linear(32, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.features(x)  # mean and max over the image: fine detail moves both
            pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
            return torch.softmax(self.head(pooled), dim=-1)

    torch.manual_seed(seed)
    model = Tiny().eval()
    with torch.no_grad():  # large enough weights that the softmax spreads over images
        for p in model.parameters():
            p.mul_(2.0)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}}
    if dynamic_side:
        axes["input"].update({2: "height", 3: "width"})
    torch.onnx.export(model, torch.randn(1, 3, side, side), path, input_names=["input"], output_names=["output"],
                      dynamic_axes=axes, opset_version=14, dynamo=False)  # fmt: skip


def write_model(folder: str, name: str, seed: int = 0, dynamic_side: bool = False) -> dict[str, Any]:
    """One published model's folder (model.onnx, meta.json, and samples.npz for dbaesthetic)."""
    import warnings

    _, model, labels, side = PUBLISHED[name]
    os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in torch >= 2.9; it still works
        warnings.simplefilter("ignore")
        export_classifier(os.path.join(folder, "model.onnx"), len(labels), side, seed, dynamic_side)
    with open(os.path.join(folder, "meta.json"), "w") as fh:
        json.dump({"labels": labels, "name": "tiny_cnn", "pretrained": False}, fh, indent=4, sort_keys=True)
    if name == "dbaesthetic":
        scores = np.sort(np.random.default_rng(seed).uniform(0.5, 5.5, 200))
        np.savez(os.path.join(folder, "samples.npz"), np.stack([scores, np.linspace(0, 1, len(scores))]))
    return {"model": model, "labels": labels, "side": side}


def hub_cache(hf_home: str, names: list[str] | None = None, seed: int = 0) -> dict[str, str]:
    """Every named model in an offline hub cache; returns name -> its snapshot folder (a ``weights`` folder)."""
    out = {}
    for i, name in enumerate(names or list(PUBLISHED)):
        repo, model, _, _ = PUBLISHED[name]
        base = os.path.join(hf_home, "hub", "models--" + repo.replace("/", "--"))
        os.makedirs(os.path.join(base, "refs"), exist_ok=True)
        with open(os.path.join(base, "refs", "main"), "w") as fh:
            fh.write(COMMIT)
        folder = os.path.join(base, "snapshots", COMMIT, model)
        write_model(folder, name, seed + i)
        out[name] = folder
    return out
