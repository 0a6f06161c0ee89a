"""Checkpoints in timm's published Hugging Face layout: ``config.json`` + ``model.safetensors``.

``config.json`` holds what ``timm.create_model("hf-hub:...")`` reads: ``architecture``,
``num_classes``, optional ``model_args`` (keyword arguments of the architecture) and
``pretrained_cfg`` (input size, interpolation, crop, mean, std). We build the architecture with
random weights and load ``model.safetensors`` strictly, so a file of another layout is a clear
error, and we never unpickle anything.

``Preprocess`` reproduces timm's eval transform (``resolve_data_config`` + ``create_transform``):
resize the shorter side to ``floor(size / crop_pct)`` with PIL, centre-crop ``size``, scale to
[0, 1], normalise by mean / std. Resizing goes through PIL (not cv2) because PIL's bicubic filter
antialiases when it downscales and cv2's does not; the reference pipelines use PIL.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from groundwork.checkpoints import WeightsError, WeightsSpec, load_into, read_state_dict, resolve
from groundwork.files import sha256_file

_PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS, "box": Image.BOX}  # fmt: skip


def resolve_file(weights: str | None, folder: str, filename: str, url: str | None) -> str:
    """A checkpoint file: ``weights`` is the folder holding the published files; without it the
    cache's ``folder/filename`` (groundwork.checkpoints.resolve: path -> cache -> pinned URL)."""
    if weights is not None:
        path = os.path.join(os.path.expanduser(os.fspath(weights)), filename)
        if not os.path.isdir(os.path.expanduser(os.fspath(weights))):
            raise WeightsError(f"weights must be the folder holding {filename}, got {weights}")
        if not os.path.isfile(path):
            raise WeightsError(f"weights file not found: {path}")
        return path
    # No sha256 is pinned (none could be verified here), so a missing file is an error naming the URL.
    return resolve(WeightsSpec(f"{folder}/{filename}", url, None))


def read_config(path: str) -> dict[str, Any]:
    """A timm ``config.json``, checked for the keys the model needs."""
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise WeightsError(f"{path}: a timm config.json needs an 'architecture' string")
    if not isinstance(cfg.get("num_classes"), int):
        raise WeightsError(f"{path}: a timm config.json needs an integer 'num_classes'")
    for key in ("model_args", "pretrained_cfg"):
        if not isinstance(cfg.setdefault(key, {}), dict):
            raise WeightsError(f"{path}: '{key}' must be an object")
    return cfg


def build_model(cfg: dict[str, Any], what: str, **overrides: Any) -> Any:
    """The timm architecture of ``cfg`` with random weights (timm never downloads here)."""
    import timm

    args = {**cfg["model_args"], **overrides}
    try:
        return timm.create_model(
            cfg["architecture"], pretrained=False, num_classes=cfg["num_classes"], **args
        )
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise WeightsError(f"{what}: timm cannot build {cfg['architecture']!r} with {args} ({exc})") from None


def load_strict(model: Any, path: str, what: str) -> str:
    """Load ``path`` (safetensors or a weights_only torch file) strictly; returns its sha256."""
    load_into(model, read_state_dict(path), f"{what} ({path})")
    return sha256_file(path)


@dataclass(frozen=True)
class Preprocess:
    """timm's eval transform, from a ``pretrained_cfg``."""

    size: int = 224
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_pretrained_cfg(cls, pcfg: dict[str, Any], what: str, **defaults: Any) -> Preprocess:
        merged = {**defaults, **{k: v for k, v in pcfg.items() if v is not None}}
        size = merged.get("input_size", [3, cls.size, cls.size])
        if len(size) != 3 or size[1] != size[2]:
            raise WeightsError(f"{what}: only square input sizes are supported, got {size}")
        interp = merged.get("interpolation", "bicubic")
        if interp not in _PIL_FILTERS:
            raise WeightsError(f"{what}: unknown interpolation {interp!r}")
        if merged.get("crop_mode", "center") != "center":
            raise WeightsError(f"{what}: crop_mode {merged['crop_mode']!r} is not supported (only 'center')")
        return cls(int(size[1]), float(merged.get("crop_pct", 1.0)), interp,
                   tuple(merged.get("mean", cls.mean)), tuple(merged.get("std", cls.std)))  # fmt: skip

    def resize_crop(self, rgb: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 -> ``size x size x 3`` uint8: shorter side to floor(size / crop_pct), centre crop."""
        h, w = rgb.shape[:2]
        scale = math.floor(self.size / self.crop_pct)
        # torchvision's Resize(int): the shorter side becomes `scale`, the longer one is truncated
        if w <= h:
            new_w, new_h = scale, int(scale * h / w)
        else:
            new_w, new_h = int(scale * w / h), scale
        img = Image.fromarray(rgb).resize((new_w, new_h), _PIL_FILTERS[self.interpolation])
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return np.asarray(img)[top : top + self.size, left : left + self.size]

    def normalise(self, batch: Any) -> Any:
        """``N x S x S x 3`` uint8 tensor (on any device) -> ``N x 3 x S x S`` float32, as ToTensor + Normalize."""
        import torch

        x = batch.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
