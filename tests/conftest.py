"""Shared fixtures: one local Ray per test session, the shared corpus, images made in the test."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from pipelines.paths import corpus_illustrations, shared_dir


@pytest.fixture(scope="session")
def shared() -> str:
    path = shared_dir()
    if path is None:
        pytest.skip("../shared is absent (set LINEPAIRS_SHARED to the shared folder to run this test)")
    return path


@pytest.fixture(scope="session")
def corpus(shared) -> str:
    path = corpus_illustrations()
    if path is None:
        pytest.skip("../shared/corpus/illustrations is absent")
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded Ray for the whole session; yields its address so subprocesses can join it."""
    import ray

    from pipelines.raycluster import ray_session

    with ray_session(None, chatter_to_log=False):  # pytest owns this process's stderr
        yield ray.get_runtime_context().gcs_address


@pytest.fixture
def small_corpus(corpus, tmp_path) -> str:
    """A handful of real corpus images (varied sizes and formats) in a fresh folder."""
    names = ["anime2sketch_001.jpg", "sketchkeras_002.jpg", "style2paints_004.jpg", "style2paints_021.png",
             "danbooregion_007.png", "paintsundo_003.jpg", "controlnet11_photo_002.png", "style2paints_008.jpg"]  # fmt: skip
    folder = tmp_path / "small"
    folder.mkdir()
    for name in names:
        shutil.copy(os.path.join(corpus, name), folder / name)
    return str(folder)


def gradient_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB test image with edges and colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack(
        [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 127 // max(w + h, 1))], -1
    )
    for _ in range(6):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(5, max(6, min(w, h) // 3))
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def one_torch_thread():
    """2 shared cores: torch's OpenMP barriers under contention cost more than a second thread gains."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
