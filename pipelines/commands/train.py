"""``linepairs train OUT --config tiny --run RUN [--steps N]``: the bundled W-net trainer; resumes RUN."""

from __future__ import annotations

import argparse

from ..errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the bundled W-net on a build (re-run to resume)",
                       description="Train the W-net on the build in OUT; re-running on an existing RUN resumes it.")  # fmt: skip
    p.add_argument(
        "out", metavar="OUT", help="a finished linepairs build (path or URL, e.g. s3://bucket/pairs)"
    )
    p.add_argument("--config", default="tiny", help="preset (tiny, small, sd) or a TOML file (docs/wnet.md)")
    p.add_argument("--run", required=True, help="run folder: checkpoints, metrics.jsonl, samples/")
    p.add_argument("--steps", type=int, help="total steps of the run (default: the config's train.steps)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument(
        "--workers", type=int, default=0, help="train on K Ray Train workers (default: in this process)"
    )
    p.add_argument("--gpus", action="store_true", help="one GPU per Ray Train worker")
    p.add_argument("--address", help="Ray cluster for --workers (default: RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from sharding.loader import LoaderError
    from wnet.checkpoint import CheckpointError
    from wnet.config import WnetConfigError, load_config
    from wnet.run import RunError, TrainRequest, train
    from wnet.space import SpaceError

    if args.steps is not None and args.steps < 0:
        raise UsageError("--steps must be >= 0")
    if args.gpus and not args.workers:
        raise UsageError("--gpus is for Ray Train workers: add --workers K")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config)
        req = TrainRequest(args.out, args.run, cfg, steps=args.steps, device=args.device, show_progress=not args.quiet,
                           workers=args.workers, gpus=args.gpus, address=args.address)  # fmt: skip
        if args.workers:
            from ..raycluster import ray_session

            # Ray Train or this process is chosen here: wnet itself never starts or joins Ray.
            with ray_session(args.address):
                result = train(req)
        else:
            result = train(req)
    except (WnetConfigError, RunError, CheckpointError, LoaderError, SpaceError) as exc:
        raise UsageError(str(exc)) from None
    loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
    print(f"{result.run}: step {result.step}, last loss {loss}, checkpoint {result.checkpoint}")
    print(f"next        linepairs eval {result.run}")
    return 0
