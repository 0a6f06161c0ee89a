"""``linepairs calibrate IMAGES --labels LABELS.csv``: the filters and the quality score on a labelled folder."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from ..errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure keep/reject decisions and the quality ranking on a labelled folder",
        description="Run the build's scan (same code, same config) over a labelled folder and report, per "
        "label, kept / rejected with reasons; keep and reject recall; the quality score's ROC AUC (keeps "
        "above rejects); the reject-labelled share of the high tier. Labels starting with 'keep' must be "
        "kept, 'reject' rejected.",
    )
    p.add_argument("images", metavar="IMAGES", help="folder of images (read like a folder source)")
    p.add_argument("--labels", required=True, metavar="LABELS", help="CSV with columns file,label")
    p.add_argument("--config", help="build config (TOML); default: the built-in defaults")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", metavar="SHEET", help="write a contact sheet of every wrong decision")
    p.add_argument(
        "--cv", type=int, default=0, metavar="K",
        help="refit the illustration model K times so every image is judged out of fold (K >= 2)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="fold assignment seed (default 0)")
    p.add_argument(
        "--repeats", type=int, default=10, metavar="R",
        help="with --cv: also repeat the whole chain over fold seeds 0..R-1, mean and range (default 10; 1 = off)",
    )  # fmt: skip
    p.add_argument(
        "--fit-model", metavar="JSON",
        help="fit the illustration model on this folder (all of it) and write its coefficients here",
    )  # fmt: skip
    p.add_argument("--l2", type=float, default=1.0, help="ridge penalty of --fit-model (default 1)")
    p.set_defaults(handler=run)


def write_model(args: argparse.Namespace, cfg) -> None:
    """``--fit-model``: fit on the whole folder, measure the same fit out of fold, write both."""
    from curation import artmodel

    from ..tools.calibrate import cross_validated, fit_model, read_labels, scan_labelled

    rows, settings = scan_labelled(args.images, read_labels(args.labels), cfg)
    source = os.path.join(os.path.basename(os.path.abspath(args.images)), os.path.basename(args.labels))
    model = fit_model(rows, settings, args.l2, source=source)
    model["fitted_on"]["command"] = (
        f"linepairs calibrate {args.images} --labels {args.labels} --fit-model {args.fit_model} --l2 {args.l2:g}"
    )
    for row in rows:  # as a scan with this model would have them (the refits replace the judged ones)
        if row.get("sharpness") is not None:
            row["illustration"] = artmodel.illustration_probability(row, model)
    model["cross_validated"] = cross_validated(rows, settings, cfg, l2=args.l2)
    with open(args.fit_model, "w", encoding="utf-8") as fh:
        json.dump(model, fh, indent=1)
        fh.write("\n")
    fitted = {k: v for k, v in model["fitted_on"].items() if k != "files"}
    print(f"linepairs calibrate: wrote {args.fit_model} ({fitted})", file=sys.stderr)
    artmodel.load_model.cache_clear()


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..tools.calibrate import calibrate, contact_sheet, summary_lines

    if args.cv == 1 or args.cv < 0:
        raise UsageError("--cv must be 0 (off) or >= 2")
    if args.repeats < 1:
        raise UsageError("--repeats must be >= 1")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.fit_model:
        write_model(args, cfg)
    report, rows = calibrate(
        args.images, args.labels, cfg, folds=args.cv, seed=args.seed, repeats=args.repeats
    )
    if args.html:
        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(contact_sheet(report, rows))
    if args.json:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in report.items()}
        json.dump(clean, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print("\n".join(summary_lines(report)))
    return 0
