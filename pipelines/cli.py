"""The ``linepairs`` command line: a thin layer that parses arguments and calls the stages."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

EXIT_USAGE = 2

# Each command module registers itself with add_parser(subparsers) -> handler(args) -> exit code.
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """One clear line for the user, exit code 2."""


def _build(args: argparse.Namespace) -> int:
    from curation.sources import SourceError, parse_source

    from .build import BuildRefused, BuildRequest, run_build
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
        sources = [parse_source(s) for s in args.sources]
        req = BuildRequest(sources, args.out, config, address=args.address, show_progress=not args.quiet)
        summary = run_build(req)
    except (ConfigError, SourceError, BuildRefused) as exc:
        raise UsageError(str(exc)) from None
    if summary.already_complete:
        print(f"{summary.out} is already complete: nothing to do.")
    for line in summary.lines():
        print(line)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from sharding.verify import verify_build

    if not os.path.isdir(args.out):
        raise UsageError(f"no such build directory: {args.out}")
    faults = verify_build(args.out)
    if faults:
        print(f"{args.out}: {len(faults)} fault(s)")
        for fault in faults:
            print(f"  {fault}")
        return 1
    print(f"{args.out}: ok")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    return run_bench(args)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linepairs",
        description="Turn anime illustration dumps into (illustration, line drawing) training pairs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("build", help="run or resume a build", description="Run or resume a build into OUT.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="[NAME=][KIND:]PATH; KIND: folder, danbooru-api, gwern")
    p.add_argument("--out", required=True, help="output directory (resumed when it holds the same build)")
    p.add_argument("--config", help="build.toml (defaults: docs/config.md)")
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_build)

    p = sub.add_parser("verify", help="check a build's shards against shards.json and the manifest")
    p.add_argument("out", metavar="OUT")
    p.set_defaults(handler=_verify)

    p = sub.add_parser("bench", help="benchmarks, JSON on stdout")
    p.add_argument("--corpus", help="folder of images (default: ../shared/corpus/illustrations)")
    p.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    p.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"linepairs {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("linepairs: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
