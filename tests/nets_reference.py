"""Reference detectors (controlnet_aux) with seeded random weights saved in the public formats.

Used by the learned-network fidelity tests: each builder writes a checkpoint file laid out as the
public one (wrappers, prefixes, dtype), loads it into controlnet_aux's own detector, and returns
``(path, reference(rgb) -> uint8 HxW)``.
"""

from __future__ import annotations

import functools
import os
import warnings

import cv2
import numpy as np
import pytest
import torch


def controlnet_aux():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(
            "controlnet_aux", reason="controlnet_aux (dev extra) is needed for fidelity tests"
        )


def randomize(model: torch.nn.Module, seed: int, gain: float = 1.0) -> torch.nn.Module:
    """Seeded N(0, gain^2/fan_in) weights and N(0, 0.01) biases: varied outputs, unlike some default inits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = gain / p[0].numel() ** 0.5 if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def corpus_rgb(corpus: str, name: str, w: int, h: int) -> np.ndarray:
    bgr = cv2.imread(os.path.join(corpus, name), cv2.IMREAD_COLOR)
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_AREA)


def assert_matches(ours: np.ndarray, ref: np.ndarray, what: str) -> dict:
    """The fidelity criterion: ours == 255 - reference, mean |diff| <= 0.5 and p99 <= 2."""
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != reference {ref.shape}"
    diff = np.abs(ours.astype(np.int16) - (255 - ref.astype(np.int16)))
    stats = {"mean": float(diff.mean()), "p99": float(np.percentile(diff, 99))}
    assert stats["mean"] <= 0.5 and stats["p99"] <= 2, f"{what}: {stats}"
    return stats


def assert_not_flat(img: np.ndarray, what: str, levels: int = 2) -> None:
    """A comparison of constant images proves nothing: require several grey levels, each >= 0.5%."""
    counts = np.bincount(img.ravel(), minlength=256) / img.size
    assert (counts >= 0.005).sum() >= levels, (
        f"{what}: output nearly constant, levels {np.flatnonzero(counts)}"
    )


def _ref_np(detector, **kw):
    def run(rgb: np.ndarray) -> np.ndarray:
        out = detector(rgb, output_type="np", **kw)
        return out[..., 0] if out.ndim == 3 else out

    return run


def pidinet(folder: str, seed: int = 0):
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import pidinet as build

    state = randomize(build(), seed).state_dict()
    path = os.path.join(folder, "table5_pidinet.pth")
    torch.save({"epoch": 19, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, _ref_np(PidiNetDetector.from_pretrained(folder))


def teed(folder: str, seed: int = 0, **kw):
    from controlnet_aux.teed import TEEDdetector
    from controlnet_aux.teed.ted import TED

    path = os.path.join(folder, "5_model.pth")
    torch.save(randomize(TED(), seed).state_dict(), path)
    return path, _ref_np(TEEDdetector.from_pretrained(folder, filename="5_model.pth"), **kw)


def lineart(folder: str, coarse: bool):
    from controlnet_aux.lineart import Generator, LineartDetector

    for seed, name in enumerate(("sk_model.pth", "sk_model2.pth")):
        torch.manual_seed(seed)
        torch.save(Generator(3, 1, 3).state_dict(), os.path.join(folder, name))
    path = os.path.join(folder, "sk_model2.pth" if coarse else "sk_model.pth")
    return path, _ref_np(LineartDetector.from_pretrained(folder), coarse=coarse)


def lineart_anime(folder: str):
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

    torch.manual_seed(0)
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    state = UnetGenerator(3, 1, 8, 64, norm_layer=norm).state_dict()
    path = os.path.join(folder, "netG.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path, _ref_np(LineartAnimeDetector.from_pretrained(folder))


def hed(folder: str):
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    torch.manual_seed(0)
    path = os.path.join(folder, "ControlNetHED.pth")
    torch.save(
        {k: v.half() for k, v in ControlNetHED_Apache2().state_dict().items()}, path
    )  # the public file is fp16
    return path, _ref_np(HEDdetector.from_pretrained(folder))
