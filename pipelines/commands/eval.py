"""``linepairs eval RUN [--json]``: sketch alignment (edge F-score, Chamfer) and held-out loss of a W-net run."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="score a W-net run: sketch alignment vs a mismatched baseline, held-out loss"
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.add_argument(
        "--limit", type=int, default=48, help="(sample, extractor) units to paint and score (default 48)"
    )
    p.add_argument("--seeds", type=int, default=1, help="noise seeds per unit (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sharding.loader import LoaderError
    from wnet.checkpoint import CheckpointError
    from wnet.config import WnetConfigError
    from wnet.evaluate import evaluate
    from wnet.run import RunError
    from wnet.sources import SourceError
    from wnet.space import SpaceError

    from ..errors import UsageError
    from .train import require_diffusers

    require_diffusers()
    try:
        scores = evaluate(args.run, limit=args.limit, seed=args.seed, device=args.device, seeds=args.seeds)
    except (CheckpointError, RunError, LoaderError, WnetConfigError, SourceError, SpaceError) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(scores, sort_keys=True))
        return 0
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"run         {scores['run']} (step {scores['step']}, {scores['samples']} samples)")
    print(f"edge F1     matched {fmt(scores['edge_f1_matched'])}  mismatched {fmt(scores['edge_f1_mismatched'])}"
          f"  gap {fmt(scores['edge_f1_gap'])}")  # fmt: skip
    lo, hi = scores["edge_f1_gap_ci95"]
    per_seed = ", ".join(fmt(g) for g in scores["edge_f1_gap_per_seed"])
    print(f"gap spread  95% bootstrap interval [{fmt(lo)}, {fmt(hi)}]; per seed {per_seed}")
    print(
        f"chamfer     matched {fmt(scores['chamfer_matched'])}  mismatched {fmt(scores['chamfer_mismatched'])} (px)"
    )
    print(f"held-out    loss {fmt(scores['heldout_loss'])} over {scores['heldout_samples']} samples")
    print(f"sheet       {args.run}/eval/contact.png")
    return 0
