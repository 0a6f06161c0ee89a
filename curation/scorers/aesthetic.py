"""``aesthetic``: the LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor).

Its published head is an MLP over the L2-normalised CLIP ViT-L/14 image embedding (768 values):
Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout, Linear(64, 16),
Linear(16, 1), no activations, so the keys are ``layers.{0,2,4,6,7}.{weight,bias}``
(``sac+logos+ava1-l14-linearMSE.pth``, a plain state dict: loaded with ``weights_only=True``).
Its output is on the LAION / AVA rating scale, roughly 1..10.

The image tower is timm's ``vit_large_patch14_clip_224.openai`` (``model.safetensors`` and
``config.json`` of the Hugging Face repo ``timm/vit_large_patch14_clip_224.openai``; its ``head`` is
CLIP's visual projection to 768). OpenAI's CLIP uses QuickGELU, and timm's note on that checkpoint
says to use the ``quickgelu`` variant for the original results, so we build it with
``act_layer="quick_gelu"``. Preprocessing is CLIP's: shorter side to 224 (PIL bicubic), centre crop,
[0, 1], normalise by the CLIP mean / std (``pretrained_cfg``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from groundwork.checkpoints import WeightsError, load_into, read_state_dict
from groundwork.files import sha256_file

from .registry import register
from .timm_layout import Preprocess, build_model, chunks, load_strict, read_config, resolve_file

TOWER_REPO = "timm/vit_large_patch14_clip_224.openai"
MLP_FILE = "sac+logos+ava1-l14-linearMSE.pth"
MLP_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"
# timm's pretrained_cfg of vit_large_patch14_clip_224.openai: used when config.json is absent
DEFAULT_CONFIG = {
    "architecture": "vit_large_patch14_clip_224",
    "num_classes": 768,
    "model_args": {},
    "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 1.0,
                       "crop_mode": "center", "mean": [0.48145466, 0.4578275, 0.40821073],
                       "std": [0.26862954, 0.26130258, 0.27577711]},
}  # fmt: skip


def mlp(dim: int) -> Any:
    """The predictor's head, in its published module layout (a module whose ``layers`` is the Sequential)."""
    from torch import nn

    head = nn.Module()
    head.layers = nn.Sequential(
        nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )  # fmt: skip
    head.forward = head.layers.forward
    return head


def _check(opts: dict[str, Any]) -> None:
    if opts["batch_size"] < 1:
        raise ValueError("batch_size must be >= 1")


class AestheticScorer:
    name = "aesthetic"
    version = "1"
    columns = ("aesthetic",)

    def __init__(self, weights: str | None, device: str, batch_size: int):
        import torch

        folder = "aesthetic"
        base = f"https://huggingface.co/{TOWER_REPO}/resolve/main"
        tower = resolve_file(weights, folder, "model.safetensors", f"{base}/model.safetensors")
        head = resolve_file(weights, folder, MLP_FILE, MLP_URL)
        try:
            cfg_path: str | None = resolve_file(weights, folder, "config.json", f"{base}/config.json")
        except WeightsError:
            cfg_path = None  # the tower's defaults are timm's own
        cfg = read_config(cfg_path) if cfg_path else DEFAULT_CONFIG
        what = f"aesthetic tower {tower}"
        self.tower = build_model(cfg, what, act_layer="quick_gelu").eval()
        self.files = {"model.safetensors": load_strict(self.tower, tower, what)}
        state = read_state_dict(head)
        first = state.get("layers.0.weight")
        if first is None or first.ndim != 2:
            raise WeightsError(
                f"aesthetic head {head}: no layers.0.weight; not an improved-aesthetic-predictor MLP"
            )
        if first.shape[1] != cfg["num_classes"]:
            raise WeightsError(
                f"aesthetic head {head} takes {first.shape[1]}-d embeddings but the tower gives {cfg['num_classes']}"
            )
        self.head = mlp(first.shape[1]).eval()
        load_into(self.head, state, f"aesthetic head ({head})")
        self.files[MLP_FILE] = sha256_file(head)
        if cfg_path:
            self.files["config.json"] = sha256_file(cfg_path)
        self.tower.to(device)
        self.head.to(device)
        self.pre = Preprocess.from_pretrained_cfg(cfg["pretrained_cfg"], what)
        self.device, self.batch_size, self.torch = device, batch_size, torch
        self.details = {
            "architecture": cfg["architecture"],
            "act_layer": "quick_gelu",
            "scale": "LAION 1..10",
        }

    def embed(self, images: Sequence[np.ndarray]) -> Any:
        """L2-normalised image embeddings, ``N x 768`` (a zero vector stays zero, as in the reference)."""
        torch = self.torch
        batch = torch.from_numpy(np.stack([self.pre.resize_crop(img) for img in images])).to(self.device)
        emb = self.tower(self.pre.normalise(batch)).float()
        norm = emb.norm(dim=-1, keepdim=True)
        return emb / torch.where(norm == 0, torch.ones_like(norm), norm)

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, list[Any]]:
        out: list[float] = []
        with self.torch.inference_mode():
            for part in chunks(images, self.batch_size):
                out += self.head(self.embed(part))[:, 0].cpu().numpy().astype(np.float32).tolist()
        return {"aesthetic": out}


@register(
    "aesthetic",
    summary="LAION improved aesthetic predictor over CLIP ViT-L/14 (timm): a 1..10 score",
    columns=AestheticScorer.columns,
    defaults={"batch_size": 16},
    check=_check,
)
def aesthetic(weights: str | None = None, device: str = "cpu", **opts: Any) -> AestheticScorer:
    return AestheticScorer(weights, device, **opts)
