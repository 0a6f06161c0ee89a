"""Scale-out, the torch side: the same ``train_loop`` once per worker, the model spread over ranks.

Ray Train (``pipelines/raytrain.py``, the Ray side) starts the workers and their torch.distributed
process group (gloo on CPU, NCCL on GPU) and calls ``rank_loop`` in each.
Each rank streams its own batches (the loader's ``rank``/``world_size`` split: batch j of the global
stream goes to rank j mod K). ``train.strategy`` picks how the model is spread:

- ``ddp``: DistributedDataParallel; every rank holds the whole model, gradients are averaged.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on each UNet down/up block, its middle
  block, each sketch-encoder level and the rest as the root: parameters, gradients and AdamW state
  are sharded across ranks and gathered per block for compute. Checkpoints are gathered full
  (``torch.distributed.checkpoint.state_dict``), so a run resumes under either strategy's layout.

Rank 0 alone writes RUN, which must therefore be a path rank 0 can reach (on one machine: any local
path; on a cluster: shared storage). ``wnet`` imports neither Ray nor ``pipelines``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .checkpoint import latest_checkpoint, open_checkpoint
from .run import TrainRequest, TrainResult, read_metrics, train_loop


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


def rank_loop(req: TrainRequest, rank: int, world: int, device: Any) -> TrainResult:
    """One rank's share of a multi-worker run (called by each Ray Train worker, pipelines/raytrain.py):
    the model wrapped by ``train.strategy``, the rank's own batches."""
    req = dataclasses.replace(req, device=str(device))
    sharded = req.config.train.strategy == "fsdp"

    def wrap(model):
        return fsdp_wrap(model) if sharded else ddp_wrap(model, device)

    return train_loop(req, rank=rank, world=world, wrap=wrap, sharded=sharded)


def gathered_result(req: TrainRequest) -> TrainResult:
    """The outcome of a multi-worker run, read from RUN (rank 0 wrote it)."""
    latest = latest_checkpoint(req.run)
    rows = read_metrics(req.run)
    step = open_checkpoint(latest).step if latest else 0
    return TrainResult(req.run, step, latest, rows[-1]["loss"] if rows else None)


__all__ = ["ddp_wrap", "fsdp_wrap", "gathered_result", "rank_loop"]
