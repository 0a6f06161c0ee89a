"""``linepairs export-model RUN DIR``: a trained W-net as a folder diffusers and torch load (wnet/export.py)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("export-model", help="write a trained W-net as a diffusers UNet folder + sketch encoder",
                       description="Write the W-net of RUN (its newest checkpoint, or a checkpoint folder) into "
                                   "DIR: unet/ for diffusers, the sketch encoder's safetensors, a README with a "
                                   "loading snippet.")  # fmt: skip
    p.add_argument("run", metavar="RUN", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("dir", metavar="DIR", help="folder to write (must not exist, or be empty)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="EMA (default) or raw weights")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wnet.checkpoint import CheckpointError
    from wnet.config import WnetConfigError
    from wnet.export import ExportError, export_model
    from wnet.sources import SourceError
    from wnet.space import SpaceError

    from ..errors import UsageError
    from .train import require_diffusers

    require_diffusers()
    try:
        facts = export_model(args.run, args.dir, which=args.weights)
    except (CheckpointError, ExportError, WnetConfigError, SourceError, SpaceError) as exc:
        raise UsageError(str(exc)) from None
    print(
        f"{args.dir}: W-net of step {facts['step']} ({args.weights} weights); loading snippet in {args.dir}/README.md"
    )
    return 0
