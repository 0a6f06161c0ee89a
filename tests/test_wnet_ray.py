"""The W-net trainer on Ray Train: two CPU workers (TorchTrainer, ScalingConfig), each streaming its own batches."""

from __future__ import annotations

import os

import pytest
import torch

from wnet.checkpoint import open_checkpoint
from wnet.config import load_config
from wnet.run import RunError, TrainRequest, read_metrics, train

from .wnet_build import shared_demo_build, tiny_toml


@pytest.fixture(scope="module")
def build(corpus, ray_cluster, tmp_path_factory) -> str:
    return shared_demo_build(corpus, tmp_path_factory)


def test_two_cpu_workers_train_and_rank_zero_saves(build, tmp_path):
    pytest.importorskip("ray.train.torch")
    cfg = load_config(tiny_toml(str(tmp_path / "t.toml"), batch_size=4, checkpoint_every=3))
    run = str(tmp_path / "run")
    result = train(TrainRequest(build, run, cfg, steps=3, workers=2, show_progress=False))
    assert result.step == 3
    ckpt = open_checkpoint(run)
    assert ckpt.step == 3 and ckpt.state["world"] == 2
    states = ckpt.state["loader_states"]
    assert [s["rank"] for s in states] == [0, 1] and all(
        s["world_size"] == 2 and s["position"] == 3 for s in states
    )
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    # Every rank took its own batches, so the global batch is 2 x 4 samples.
    assert read_metrics(run)[-1]["samples_per_s"] > 0
    assert all(torch.isfinite(v).all() for v in ckpt.weights("model").values())
    # A checkpoint of two workers resumes on two workers only: said in one line.
    with pytest.raises(RunError, match="written by 2 worker"):
        train(TrainRequest(build, run, cfg, steps=4, show_progress=False))
    assert os.path.isdir(os.path.join(run, "checkpoints"))
