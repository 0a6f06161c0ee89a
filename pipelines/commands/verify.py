"""``linepairs verify OUT``: exit 1 with a list of faults."""

from __future__ import annotations

import argparse
import os

from ..errors import UsageError
from .storage import add_out_argument, open_out


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check every shard against shards.json and the manifest")
    add_out_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sharding.layout import first_line, is_url, storage_fault
    from sharding.verify import sample_count, verify_build

    if not is_url(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"no such build directory: {args.out}")
    layout = open_out(args.out, args)
    from ..tools.reweight import resolve_faults

    try:
        faults = verify_build(layout)
        if not any("weights/" in f or "manifest" in f for f in faults):
            # each weight version solved again from its recorded policy: a version rewritten to
            # other weights is named even when its record in build.json was rewritten too
            faults += resolve_faults(layout)
    except OSError as exc:  # the store stopped answering or refuses: an outage, not a fault of OUT
        raise UsageError(f"cannot read {args.out}: {storage_fault(exc) or first_line(exc)}") from None
    if faults:
        print(f"{args.out}: {len(faults)} fault(s)")
        for fault in faults:
            print(f"  {fault}")
        return 1
    if sample_count(layout) == 0:
        print(f"{args.out}: ok, but EMPTY: 0 samples (every input was rejected; see rejects.parquet)")
        return 0
    print(f"{args.out}: ok")
    return 0
