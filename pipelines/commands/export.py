"""``linepairs export OUT DEST --to {diffusers,kohya,simpletuner,ai-toolkit}``."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .storage import add_out_argument, storage_options

TARGETS = (
    "diffusers",
    "kohya",
    "simpletuner",
    "ai-toolkit",
)  # pipelines.export.TARGETS, without importing it


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a finished build as a dataset for diffusers, kohya sd-scripts, SimpleTuner or ai-toolkit",
        description="Write OUT as DEST for another trainer: pairs, captions from the tags, and the weights as "
        "repeats (or rows), with the training command in DEST/README.md and the realised shares in "
        "DEST/export.json. Re-run the same command to resume. docs/export.md has the details.",
    )
    add_out_argument(p)
    p.add_argument(
        "dest", metavar="DEST", help="a new or empty folder (path or URL), or an unfinished export to resume"
    )
    p.add_argument("--to", required=True, choices=TARGETS, dest="target", help="the trainer")
    p.add_argument("--weights", metavar="NAME", help="weight version (default: the active one)")
    p.add_argument(
        "--extractor", metavar="NAME[=SHARE][,NAME...]",
        help="the drawing(s): one, or a per-sample mix; a dropped drawing falls back to the next name "
        "(default: the build's first extractor, the others as fallbacks)",
    )  # fmt: skip
    p.add_argument(
        "--invert", action=argparse.BooleanOptionalAction, default=None,
        help="white lines on black (--no-invert: black ink on white, as the shards hold it); default per target",
    )  # fmt: skip
    p.add_argument(
        "--caption-order", metavar="CATEGORIES",
        help="tag categories in caption order (default character,copyright,artist,general; meta left out)",
    )  # fmt: skip
    p.add_argument(
        "--underscores", action="store_true", help="keep Danbooru's _ inside tags (default: spaces)"
    )
    p.add_argument("--val", type=int, default=0, metavar="N", help="hold N samples out as a validation set")
    p.add_argument(
        "--repeat-levels", type=int, default=8, metavar="K",
        help="at most K distinct repeat counts, one folder each (kohya, SimpleTuner, ai-toolkit; default 8)",
    )  # fmt: skip
    p.add_argument(
        "--resolution", type=int, metavar="PX", help="the training resolution (default per target)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the drawing mix and the validation pick")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="shards written at once")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sharding.layout import StorageError

    from ..export import ExportError, ExportRefused, ExportRequest, run_export

    try:
        req = ExportRequest(
            out=args.out, dest=args.dest, target=args.target, weights=args.weights, extractor=args.extractor,
            invert=args.invert, caption_order=args.caption_order, underscores=args.underscores, val=args.val,
            repeat_levels=args.repeat_levels, resolution=args.resolution, seed=args.seed,
            storage_options=storage_options(args), workers=args.workers,
            show_progress=not args.quiet,
        )  # fmt: skip
        summary = run_export(req)
    except (ExportError, ExportRefused, StorageError) as exc:
        raise UsageError(str(exc)) from None
    if summary.already_complete:
        print(f"{summary.dest}: already complete: nothing to do")
    print("\n".join(summary.lines()))
    return 0
