"""The ``linepairs`` command line: a thin layer; each command lives in ``pipelines/commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import EXIT_USAGE, UsageError, fault_line

# One module per command; each has ``add_parser(subparsers)`` that sets ``handler(args) -> int``.
COMMANDS = (
    "pipelines.commands.build",
    "pipelines.commands.verify",
    "pipelines.commands.inspect",
    "pipelines.commands.extract",
    "pipelines.commands.audit",
    "pipelines.commands.reweight",
    "pipelines.commands.export",
    "pipelines.commands.train",
    "pipelines.commands.eval",
    "pipelines.commands.sample",
    "pipelines.commands.export_model",
    "pipelines.commands.calibrate",
    "pipelines.commands.bench",
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linepairs",
        description="Turn anime illustration dumps into (illustration, line drawing) training pairs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
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
    except Exception as exc:  # noqa: BLE001 - the top level: a known fault becomes one line, anything else is re-raised
        # Disk full, read-only OUT, a store that stops answering or refuses, a damaged file: one
        # line, even when a Ray worker hit it.
        line = fault_line(exc, getattr(args, "out", None))
        from groundwork.filesystems import causes

        if line is None or any(isinstance(e, FileNotFoundError) for e in causes(exc)):
            from .commands.storage import outage_line

            line = outage_line(args) or line  # a missing file on a store that went away: the outage
        if line is None:
            raise
        print(f"linepairs {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
