"""``linepairs train OUT --run RUN [--config C] [--init MODEL]``: the bundled W-net trainer; resumes RUN."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .storage import add_out_argument, storage_options

INSTALL = "pip install -c constraints.txt -e . (make setup does it)"


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the bundled W-net on a build (re-run to resume)",
                       description="Train the W-net on the build in OUT; re-running on an existing RUN resumes it.")  # fmt: skip
    add_out_argument(p)
    p.add_argument("--config", help="preset (tiny, small, sd, sd2, sdxl) or a TOML file (docs/wnet.md); "
                   "default: tiny, or with --init the preset of MODEL's family")  # fmt: skip
    p.add_argument("--run", required=True, help="run folder: checkpoints, metrics.jsonl, samples/")
    p.add_argument("--init", metavar="MODEL", help="start from a Stable Diffusion model: a diffusers folder or a "
                   "single-file checkpoint (.safetensors, .ckpt); every UNet block, its text encoder and VAE")  # fmt: skip
    p.add_argument("--tokenizer", help="tokenizer folder for a single-file MODEL (sets text.tokenizer)")
    p.add_argument("--cache-latents", nargs="?", const="", metavar="DIR",
                   help="encode each shard's illustrations with the VAE once, into DIR (default: latents/ beside RUN)")  # fmt: skip
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


def require_diffusers() -> None:
    """The W-net's UNet and schedulers are diffusers', its text encoders transformers'; a missing one
    is one line naming the install command."""
    import importlib.util

    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the W-net needs {' and '.join(missing)}, not installed here: {INSTALL}")


def config_for(args: argparse.Namespace):
    """The run's config: --config (or the preset --init's family suggests), with --init and --tokenizer."""
    from wnet.config import FAMILY_PRESETS, load_config

    name = args.config
    if name is None and args.init:
        from wnet.sources import family_of

        name = FAMILY_PRESETS.get(family_of(args.init), "tiny")
    cfg = load_config(name or "tiny")
    changes = {}
    if args.init:
        changes["init"] = {"base": os.path.abspath(args.init)}
    if args.tokenizer:
        changes["text"] = {"tokenizer": os.path.abspath(args.tokenizer)}
    return cfg.replace(**changes) if changes else cfg


def run(args: argparse.Namespace) -> int:
    require_diffusers()
    import torch

    from sharding.loader import LoaderError
    from wnet.checkpoint import CheckpointError
    from wnet.config import WnetConfigError
    from wnet.latents import LatentCacheError, default_root
    from wnet.run import RunError, TrainRequest, train
    from wnet.sources import SourceError
    from wnet.space import SpaceError

    if args.steps is not None and args.steps < 0:
        raise UsageError("--steps must be >= 0")
    if args.gpus and not args.workers:
        raise UsageError("--gpus is for Ray Train workers: add --workers K")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = config_for(args)
        cache = None
        if args.cache_latents is not None:
            cache = os.path.abspath(args.cache_latents or default_root(args.run))
        req = TrainRequest(args.out, args.run, cfg, steps=args.steps, device=args.device, show_progress=not args.quiet,
                           workers=args.workers, gpus=args.gpus, address=args.address, latent_cache=cache,
                           storage_options=storage_options(args))  # fmt: skip
        if args.workers:
            from ..raycluster import ray_session
            from ..raytrain import train_on_ray

            # Ray Train or this process is chosen here: wnet itself never starts or joins Ray.
            with ray_session(args.address):
                result = train(req, scale_out=train_on_ray)
        else:
            result = train(req)
    except (
        WnetConfigError,
        RunError,
        CheckpointError,
        LoaderError,
        SpaceError,
        SourceError,
        LatentCacheError,
    ) as exc:
        raise UsageError(str(exc)) from None
    loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
    print(f"{result.run}: step {result.step}, last loss {loss}, checkpoint {result.checkpoint}")
    print(f"next        linepairs eval {result.run}")
    return 0
