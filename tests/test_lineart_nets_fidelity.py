"""Fidelity of every learned network against its reference module, with seeded random weights.

For each network the reference (controlnet_aux) module is built with seeded random weights, its
state dict saved in the public checkpoint's format (``module.`` prefixes, ``state_dict`` wrapper,
fp16 for HED), loaded into controlnet_aux's own detector and into ours (strict), and both run on
a real corpus image at 512x512 (short side 512, multiples of 64). Ours must equal
``255 - reference``: mean |diff| <= 0.5 and 99th percentile <= 2.

MangaLineExtraction has no installable reference (huggingface/controlnet_aux lacks it), so it is
checked against the published key layout and parameter count, OpenCV's grey conversion, and its
padding and cropping.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import lineart
from lineart.nets import manga_line

from . import nets_reference as ref


@pytest.fixture(scope="module")
def image(corpus) -> np.ndarray:
    return ref.corpus_rgb(corpus, "style2paints_008.jpg", 512, 512)


@pytest.fixture(scope="module", autouse=True)
def _reference_installed():
    ref.controlnet_aux()


def _assert_like_reference(
    name: str, path: str, reference, img: np.ndarray, levels: int = 10, **options
) -> None:
    """Our ``name`` (the checkpoint at ``path``, with ``options``) draws ``img`` as ``reference``
    does, and not flat (at least ``levels`` grey levels)."""
    label = " ".join([name, *(f"{k}={v}" for k, v in options.items())])
    ours = lineart.create(name, weights=path, reference_exact=True, **options)(img[None])[0]
    ref.assert_matches(ours, reference(img), label)
    ref.assert_not_flat(ours, label, levels=levels)


def test_pidinet_random_weights(tmp_path, image):
    path, reference = ref.pidinet(str(tmp_path))
    _assert_like_reference("pidinet", path, reference, image)


def test_teed_random_weights_default_and_continuous(tmp_path, image):
    path, reference = ref.teed(str(tmp_path))
    _assert_like_reference("teed", path, reference, image, levels=2)  # safe_steps=2: three levels at most
    _, continuous = ref.teed(str(tmp_path), safe_steps=0)
    _assert_like_reference("teed", path, continuous, image, safe_steps=0)


@pytest.mark.parametrize("name,coarse", [("lineart", False), ("lineart_coarse", True)])
def test_informative_drawings_random_weights(tmp_path, image, name, coarse):
    path, reference = ref.lineart(str(tmp_path), coarse)
    _assert_like_reference(name, path, reference, image)


def test_lineart_anime_random_weights_with_resize_to_256(tmp_path, image):
    """512x576 is not a multiple of 256: both sides go through the reference's bicubic resizes."""
    path, reference = ref.lineart_anime(str(tmp_path))
    img = cv2.resize(image, (576, 512), interpolation=cv2.INTER_AREA)
    _assert_like_reference("lineart_anime", path, reference, img)


def test_hed_random_weights_from_fp16_file(tmp_path, image):
    path, reference = ref.hed(str(tmp_path))
    _assert_like_reference("hed", path, reference, image)


# --- MangaLineExtraction: no installable reference ------------------------------------------


def test_manga_line_matches_the_published_layout():
    model = manga_line.ResSkip()
    state = model.state_dict()
    # erika.pth: 43,100,147 parameters, 707 tensors with BatchNorm statistics (NETWORKS.md, built from the reference)
    assert sum(p.numel() for p in model.parameters()) == 43_100_147
    assert len(state) == 707
    assert state["block0.model.0.conv1.model.0.running_var"].shape == (1,)  # BN on the grey input
    assert state["block0.model.0.shortcut.model.0.weight"].shape == (24, 1, 1, 1)
    assert state["block4.model.11.shortcut.model.0.weight"].shape == (384, 384, 1, 1)  # strided last block
    assert state["block5.model.0.shortcut.model.0.weight"].shape == (192, 384, 1, 1)  # upsampling first block
    assert state["conv15.model.2.weight"].shape == (1, 16, 1, 1)
    assert not any(k.startswith("res") for k in state)  # the skip additions carry no weights


def test_manga_line_pads_runs_and_crops(tmp_path, image):
    """The extractor equals the module run on the edge-padded grey image, cropped back."""
    model = ref.randomize(manga_line.ResSkip(), seed=0)
    model.train()
    for m in model.modules():  # one forward in train mode sets BN statistics from a real image
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    grey = torch.from_numpy(cv2.cvtColor(image[:128, :128], cv2.COLOR_RGB2GRAY)).float()[None, None]
    with torch.no_grad():
        y = model(grey)
        model.conv15.model[2].weight.mul_(60.0 / float(y.std()))  # spread the raw output over 0..255
        model.conv15.model[2].bias.add_(128.0)
    model.eval()
    torch.save(model.state_dict(), tmp_path / "erika.pth")
    img = np.ascontiguousarray(image[:100, :150])  # padded to 128 x 192
    ours = lineart.create("manga_line", weights=str(tmp_path / "erika.pth"), reference_exact=True)(img[None])[
        0
    ]
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    padded = np.pad(grey, ((0, 28), (0, 42)), mode="edge").astype(np.float32)
    with torch.no_grad():
        want = (
            model(torch.from_numpy(padded)[None, None])[0, 0, :100, :150]
            .clamp(0, 255)
            .numpy()
            .astype(np.uint8)
        )
    assert np.abs(ours.astype(int) - want.astype(int)).max() <= 1
    ref.assert_not_flat(ours, "manga_line", levels=10)
