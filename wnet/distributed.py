"""Scale-out: the same ``train_loop`` once per Ray Train worker (``TorchTrainer``, ``ScalingConfig``).

Ray Train starts the workers and their torch.distributed process group (gloo on CPU, NCCL on GPU).
Each rank streams its own batches (the loader's ``rank``/``world_size`` split: batch j of the global
stream goes to rank j mod K). ``train.strategy`` picks how the model is spread:

- ``ddp``: DistributedDataParallel; every rank holds the whole model, gradients are averaged.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on each UNet down/up block, its middle
  block, each sketch-encoder level and the rest as the root: parameters, gradients and AdamW state
  are sharded across ranks and gathered per block for compute. Checkpoints are gathered full
  (``torch.distributed.checkpoint.state_dict``), so a run resumes under either strategy's layout.

Rank 0 alone writes RUN, which must therefore be a path rank 0 can reach (on one machine: any local
path; on a cluster: shared storage). Ray itself is started or joined by the caller (``linepairs
train`` chooses an embedded Ray or ``--address``), so ``wnet`` does not import ``pipelines``. Needs
``ray[train]`` (``pip install 'linepairs[train]'``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .checkpoint import latest_checkpoint, open_checkpoint
from .run import RunError, TrainRequest, TrainResult, read_metrics, train_loop


def fsdp_wrap(model):
    """Shard the W-net with FSDP2: one unit per UNet block, per sketch-encoder block, and the root."""
    from torch.distributed.fsdp import fully_shard

    from .text import TextEncoders

    unet = model.unet
    sketch = [block for level in model.sketch_encoder.levels for block in level]
    for block in (*unet.down_blocks, unet.mid_block, *unet.up_blocks, *sketch):
        fully_shard(block)
    if isinstance(model.text, TextEncoders):  # its own unit: frozen (or not) apart from the trained root
        fully_shard(model.text)
    fully_shard(model)
    return model


def ddp_wrap(model, device):
    from torch.nn.parallel import DistributedDataParallel

    from .text import TextEncoders

    ids = [device.index] if device.type == "cuda" else None
    # A trained text encoder has tensors no loss reaches (SDXL reads the penultimate layers).
    unused = isinstance(model.text, TextEncoders) and model.text.trainable
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    req: TrainRequest = config["request"]
    device = ray.train.torch.get_device()
    req = dataclasses.replace(req, device=str(device))
    sharded = req.config.train.strategy == "fsdp"

    def wrap(model):
        return fsdp_wrap(model) if sharded else ddp_wrap(model, device)

    result = train_loop(
        req, rank=ctx.get_world_rank(), world=ctx.get_world_size(), wrap=wrap, sharded=sharded
    )
    # Every rank must report (Ray Train synchronises on it); the driver reads rank 0's.
    ray.train.report({"step": result.step, "loss": result.last_loss, "checkpoint": result.checkpoint})


def train_on_ray(req: TrainRequest) -> TrainResult:
    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as exc:
        raise RunError(f"--workers needs Ray Train: pip install 'linepairs[train]' ({exc})") from None
    import ray

    if not ray.is_initialized():
        # Which Ray (embedded or --address) is the caller's choice: `linepairs train --workers K` opens it.
        raise RunError(
            "--workers needs a Ray session: run `linepairs train --workers K`, or call ray.init() first"
        )
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"request": dataclasses.replace(req, workers=0)},
        scaling_config=ScalingConfig(num_workers=req.workers, use_gpu=req.gpus),
        run_config=RunConfig(name="ray-train", storage_path=os.path.join(req.run, "ray")),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps the worker's error; surface its one-line cause
        cause = _root_cause(exc)
        if isinstance(cause, RunError | ValueError):
            raise RunError(str(cause)) from None
        raise
    # Rank 0 wrote RUN; read the outcome from there (Ray Train keeps reported metrics only with checkpoints).
    latest = latest_checkpoint(req.run)
    rows = read_metrics(req.run)
    step = open_checkpoint(latest).step if latest else 0
    return TrainResult(req.run, step, latest, rows[-1]["loss"] if rows else None)


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None) or exc.__cause__ or getattr(exc, "worker_failures", None)
        if isinstance(nxt, dict) and nxt:
            nxt = next(iter(nxt.values()))
        if not isinstance(nxt, BaseException):
            break
        exc = nxt
    return exc


__all__ = ["ddp_wrap", "fsdp_wrap", "train_on_ray"]
