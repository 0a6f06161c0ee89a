"""The W-net on Ray Train: ``TorchTrainer`` runs ``wnet.distributed.rank_loop`` once per worker.

Ray Train starts the workers and their torch.distributed process group (gloo on CPU, NCCL on GPU);
each rank streams its own batches and ``train.strategy`` spreads the model (wnet/distributed.py).
Ray itself is started or joined by the caller (``linepairs train`` chooses an embedded Ray or
``--address``). Needs ``ray[train]`` (``pip install 'linepairs[train]'``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from wnet.distributed import gathered_result, rank_loop
from wnet.run import RunError, TrainRequest, TrainResult


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    result = rank_loop(
        config["request"], ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()
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
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error: surface a known one-line cause, re-raise the rest
        cause = _root_cause(exc)
        if isinstance(cause, RunError | ValueError):
            raise RunError(str(cause)) from None
        raise
    # Rank 0 wrote RUN; read the outcome from there (Ray Train keeps reported metrics only with checkpoints).
    return gathered_result(req)


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


__all__ = ["train_on_ray"]
