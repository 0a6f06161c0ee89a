"""The W-net trainer on Ray Train: two CPU workers (gloo), each streaming its own batches, DDP and FSDP,
resuming exactly."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from pipelines.raytrain import train_on_ray
from wnet.checkpoint import open_checkpoint
from wnet.config import load_config
from wnet.run import RunError, TrainRequest, read_metrics, train

from .wnet_build import shared_demo_build, tiny_toml


@pytest.fixture(scope="module")
def build(corpus, ray_cluster, tmp_path_factory) -> str:
    pytest.importorskip("ray.train.torch")
    return shared_demo_build(corpus, tmp_path_factory)


def _config(folder, strategy: str, **extra):
    # heldout 0.4: two of the demo build's 12 keys, so a held-out loss exists
    return load_config(tiny_toml(str(folder / f"{strategy}.toml"), batch_size=4, checkpoint_every=2,
                                 keep_checkpoints=3, strategy=strategy, heldout=0.4, **extra))  # fmt: skip


def _state(run: str) -> dict[str, torch.Tensor]:
    ckpt = open_checkpoint(run)
    out = {f"model.{k}": v for k, v in ckpt.weights("model").items()}
    out.update({f"ema.{k}": v for k, v in ckpt.weights("ema").items()})
    out.update({f"opt.{n}.{k}": v for n, s in ckpt.optimizer()["state"].items() for k, v in s.items()})
    return out


def _train_on_two(build: str, run: str, cfg) -> int:
    """Train ``run`` to step 4 on two Ray Train workers; the step it ended at."""
    return train(
        TrainRequest(build, run, cfg, steps=4, workers=2, show_progress=False), scale_out=train_on_ray
    ).step


def _assert_same_state(run: str, copy: str) -> None:
    """Model, EMA and optimizer state equal to the last bit."""
    a, b = _state(run), _state(copy)
    assert a.keys() == b.keys() and not [k for k in a if not torch.equal(a[k], b[k])]


def _resumed_copy(run: str, folder) -> str:
    """The run as if killed after its step-2 checkpoint: step 4 gone, then resumed to 4."""
    copy = str(folder / (os.path.basename(run) + "-resumed"))
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("ray"))
    shutil.rmtree(os.path.join(copy, "checkpoints", "step-00000004"))
    return copy


@pytest.fixture(scope="module")
def ddp_run(build, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    cfg = _config(folder, "ddp")
    run = str(folder / "run")
    assert _train_on_two(build, run, cfg) == 4
    return folder, cfg, run


def test_two_cpu_workers_train_rank_zero_saves_and_a_resume_is_exact(build, ddp_run):
    folder, cfg, run = ddp_run
    ckpt = open_checkpoint(run)
    assert ckpt.step == 4 and ckpt.state["world"] == 2
    states = ckpt.state["loader_states"]
    assert [s["rank"] for s in states] == [0, 1] and all(
        s["world_size"] == 2 and s["position"] == 4 for s in states
    )
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    copy = _resumed_copy(run, folder)
    assert _train_on_two(build, copy, cfg) == 4
    _assert_same_state(run, copy)
    assert [r["step"] for r in read_metrics(copy)] == [1, 2, 3, 4]
    # A checkpoint of two workers resumes on two workers only: said in one line.
    with pytest.raises(RunError, match="written by 2 worker"):
        train(TrainRequest(build, run, cfg, steps=5, show_progress=False))


def test_fsdp_shards_trains_like_ddp_and_resumes_exactly(build, ddp_run, tmp_path):
    _, ddp_cfg, ddp = ddp_run
    # previews and held-out losses on: every rank gathers the shards for them, rank 0 writes
    cfg = _config(tmp_path, "fsdp", sample_every=4, eval_every=2)
    run = str(tmp_path / "run")
    assert _train_on_two(build, run, cfg) == 4
    assert os.path.isfile(os.path.join(run, "samples", "step-00000004.png"))
    assert [r["step"] for r in read_metrics(run) if "heldout_loss" in r] == [2, 4]
    # the same data, the same seeds: FSDP's sharded step computes DDP's (up to summation order)
    fsdp_w, ddp_w = open_checkpoint(run).weights("model"), open_checkpoint(ddp).weights("model")
    assert fsdp_w.keys() == ddp_w.keys()
    worst = max(float((fsdp_w[k] - ddp_w[k]).abs().max()) for k in fsdp_w)
    assert worst < 1e-4, worst
    copy = _resumed_copy(run, tmp_path)
    assert _train_on_two(build, copy, cfg) == 4
    _assert_same_state(run, copy)
