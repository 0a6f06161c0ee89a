"""``linepairs bench [--only SECTION ...]``: the benchmark suite, one JSON object on stdout."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ..errors import UsageError

# One module per section; each has ``run(args) -> dict`` (JSON-serialisable).
SECTIONS = {
    "build": "pipelines.benches.build",
    "scorers": "pipelines.benches.scorers",  # learned scorers at their published sizes (docs/curation.md)
    "lineart_classical": "pipelines.benches.lineart_classical",
    "loader": "pipelines.benches.loader",
    "dedup": "pipelines.benches.dedup",
    "scale": "pipelines.benches.scale",
    "lineart_nets": "pipelines.benches.lineart_nets",
    "lineart_quality": "pipelines.benches.lineart_quality",
    "wnet": "pipelines.benches.wnet",
    "quality": "pipelines.benches.quality",
    "reweight": "pipelines.benches.reweight",
    "sources": "pipelines.benches.sources",  # enumerate over 10M-post parquet / SQLite metadata (docs/sources.md)
    "export": "pipelines.benches.export",  # linepairs export: vs raw shard reads; 1M-sample peak memory
}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks, JSON on stdout")
    p.add_argument(
        "--only", nargs="+", metavar="SECTION", help=f"run only these sections ({', '.join(SECTIONS)})"
    )
    p.add_argument("--corpus", help="folder of illustrations (default: ../shared/corpus/illustrations)")
    p.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    p.add_argument("--full", action="store_true", help="scale: also 10 million records (slow, ~4 GB)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per timing; medians are reported")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = args.only or list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise UsageError(f"unknown bench section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    report = {}
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        report[name] = importlib.import_module(SECTIONS[name]).run(args)
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0
