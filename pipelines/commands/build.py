"""``linepairs build SOURCE... --out OUT``."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import UsageError
from .storage import add_storage_option, open_out, storage_options


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="run or resume a build", description="Run or resume a build into OUT.")
    p.add_argument(
        "sources", nargs="*", metavar="SOURCE",
        help="[NAME=][KIND:]PATH; KIND: folder, danbooru-api, gwern, hf-tar, webdataset, sqlite, duckdb, "
        "parquet-images, linepairs (and/or [[sources]] in the config; `linepairs inspect SOURCE` shows how one is read)",
    )  # fmt: skip
    p.add_argument(
        "--out", required=True,
        help="output directory or URL (s3://bucket/pairs, file://...); resumed when it holds the same build",
    )  # fmt: skip
    p.add_argument(
        "--config",
        help="build.toml (every key and default: docs/config.md); with --append/--retry the default is "
        "the config OUT was built with",
    )
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else an embedded Ray)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_storage_option(p)
    p.add_argument(
        "--append",
        action="store_true",
        help="add the inputs OUT has not seen (new sources, new files or posts) as new shards; old shards untouched",
    )
    p.add_argument(
        "--retry", metavar="REASON[,REASON]",
        help="re-scan only the inputs rejected for these reasons (e.g. missing_file), or 'all'",
    )  # fmt: skip
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from curation.sources import SourceError, parse_source, source_from_table, with_config
    from curation.storage import SourceStorage
    from sharding.layout import StorageError

    from ..build.base import IntegrityError
    from ..build.request import BuildRefused, BuildRequest
    from ..build.run import run_build
    from ..config import ConfigError, load_config

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a folder; choose another --out")
    try:
        layout = open_out(args.out, args)
        if args.config is None and (args.append or args.retry is not None):
            from ..build.request import recorded_build_config

            config = recorded_build_config(layout)  # OUT records the config it was built with
        else:
            config = load_config(args.config)
        # URL sources (s3://...) are read with the same --storage-option settings as a URL OUT.
        storage = SourceStorage(storage_options(args))
        sources = [source_from_table(t, storage=storage) for t in config.sources]
        sources += [parse_source(s, storage=storage) for s in args.sources]
        sources = [with_config(s, config) for s in sources]
        if not sources:
            raise UsageError("no sources: give SOURCE arguments or [[sources]] tables in --config")
        from ..build.request import parse_reasons

        retry = parse_reasons(args.retry) if args.retry is not None else ()
        req = BuildRequest(
            sources, args.out, config, address=args.address, show_progress=not args.quiet,
            layout=layout, storage=storage, append=args.append, retry=retry,
        )  # fmt: skip
        summary = run_build(req)
    except (ConfigError, SourceError, BuildRefused, StorageError, IntegrityError) as exc:
        raise UsageError(str(exc)) from None
    if summary.repaired:  # each file is named on stderr (pipelines/build/repair.py)
        print(f"{summary.out}: {len(summary.repaired)} file(s) repaired (named on stderr).")
    elif summary.already_complete:
        print(f"{summary.out} is already complete: nothing to do.")
    for line in summary.lines():
        print(line)
    if summary.counts["samples"] == 0:  # exit 0 (the build did what it was asked), but never quietly
        print(
            f"linepairs build: warning: the build is EMPTY: all {summary.counts['inputs']} input(s) were "
            f"rejected (reasons above; rows in rejects.parquet)",
            file=sys.stderr,
        )
    return 0
