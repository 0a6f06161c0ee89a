"""``linepairs audit OUT [--json] [--html report.html]``: shares, buckets, tags, rejects, pairs."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UsageError
from .storage import add_out_argument, open_out


def add_parser(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="weights, buckets, sources, tags; intended vs realised draws; HTML report",
        description="Audit a build: intended share of draws (from the weights) against what the loader "
        "realises over N draws, per source, tier and bucket; tags; rejects; bad shards (exit 1).",
    )
    add_out_argument(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary")
    p.add_argument(
        "--html", metavar="REPORT", help="also write a self-contained HTML page with plots and pairs"
    )
    p.add_argument(
        "--draws", type=int, default=200_000, help="samples to draw through the loader (default 200000)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="loader batch size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="loader seed (default 0)")
    p.add_argument("--pairs", type=int, default=24, help="pairs on the HTML contact sheet (default 24)")
    p.add_argument("--top-tags", type=int, default=20, help="tags listed by count and by weight (default 20)")
    p.add_argument("--weights", metavar="NAME", help="the weight version to audit (default: the active one)")
    p.add_argument(
        "--compare", nargs=2, metavar=("A", "B"),
        help="compare the intended shares of two weight versions (source, tier, bucket, top tags); no draws",
    )  # fmt: skip
    p.set_defaults(handler=run)


def run_compare(args: argparse.Namespace, layout) -> int:
    from sharding.loader import LoaderError

    from ..tools.audit import compare, compare_lines

    try:
        report = compare(layout, *args.compare, top_tags=args.top_tags)
    except LoaderError as exc:
        raise UsageError(str(exc)) from None
    if args.html:
        from ..tools.report import render_compare_html

        try:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(render_compare_html(report))
        except OSError as exc:
            raise UsageError(f"cannot write {args.html}: {exc}") from None
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
        print()
    else:
        print("\n".join(compare_lines(report)))
        if args.html:
            print(f"report       {args.html}")
    return 0


def run(args: argparse.Namespace) -> int:
    from sharding.loader import LoaderError

    from ..tools.audit import audit, pair_samples, public, summary_lines

    if args.draws < 1 or args.batch_size < 1 or args.pairs < 0 or args.top_tags < 0 or args.seed < 0:
        raise UsageError("--draws and --batch-size must be >= 1; --pairs, --top-tags and --seed >= 0")
    layout = open_out(args.out, args)
    if args.compare:
        if args.weights:
            raise UsageError("--compare names both versions; leave out --weights")
        return run_compare(args, layout)
    try:
        report = audit(
            layout, draws=args.draws, batch_size=args.batch_size, seed=args.seed, top_tags=args.top_tags,
            weights=args.weights,
        )  # fmt: skip
        keys = report["_first_keys"][: args.pairs]
        samples = pair_samples(layout, keys, report["_first_weights"]) if args.html else []
    except LoaderError as exc:
        raise UsageError(str(exc)) from None
    if args.html:
        from ..tools.report import render_html

        try:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(render_html(report, samples))
        except OSError as exc:
            raise UsageError(f"cannot write {args.html}: {exc}") from None
    if args.json:
        json.dump(public(report), sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
        print()
    else:
        print("\n".join(summary_lines(report)))
        if args.html:
            print(f"report       {args.html}")
    return 1 if report["shard_problems"] else 0
