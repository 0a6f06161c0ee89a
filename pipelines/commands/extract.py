"""``linepairs extract IMAGE --extractor NAME [-o PNG]`` or ``--all``: try extractors on one image;
``linepairs extract --compare [-o DIR]``: score the extractors against real line art.

``--all`` runs every registered extractor and writes one contact sheet (the image, then each
drawing, labelled); learned extractors whose weights do not resolve are skipped, and the command
says which and why. ``--compare`` runs pipelines.scorecard: a markdown table on stdout, and
``DIR/compare.json`` plus the HTML contact sheet ``DIR/index.html``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from typing import Any

import numpy as np

from ..errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="run line extractors on one image",
        description="Run one line extractor (--extractor NAME) or all of them (--all, a contact sheet) on IMAGE.",
    )
    p.add_argument(
        "image", metavar="IMAGE", nargs="?", help="the image (not needed with --list or --compare)"
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--extractor", metavar="NAME", help="an extractor name (see --list)")
    what.add_argument("--all", action="store_true", help="every extractor, side by side in one contact sheet")
    what.add_argument("--list", action="store_true", help="list the extractors and exit")
    what.add_argument("--compare", action="store_true",
                      help="score extractors against the shared real line-art pairs and pair quality")  # fmt: skip
    p.add_argument(
        "-o", "--output", metavar="PNG",
        help="output PNG (default: IMAGE_STEM.NAME.png / IMAGE_STEM.all.png); with --compare a folder (compare/)",
    )  # fmt: skip
    p.add_argument(
        "--only", metavar="NAMES", help="with --compare: comma-separated extractors (default: all)"
    )
    p.add_argument("--shared", metavar="DIR", help="with --compare: the shared folder (default: ../shared)")
    p.add_argument("--limit", type=int, default=0,
                   help="with --compare: at most this many images per drop set (0: all)")  # fmt: skip
    p.add_argument("--weights", help="checkpoint for a learned --extractor")
    p.add_argument("--device", default="cpu", help="cpu (OpenCV path for classical ones), cuda, cuda:1, ...")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extractor option (TOML value: 0.5, 'median', true); repeatable; with --extractor, "
                        "or with --compare for every extractor compared")  # fmt: skip
    p.add_argument("--max-side", type=int, default=None,
                   help="shrink images so that their longer side is at most this "
                        "(0: keep; default 1024, 768 with --compare)")  # fmt: skip
    p.set_defaults(handler=run)


def _parse_option(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"--option wants KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word: a string
    return key.strip(), parsed


def load_image(path: str, max_side: int) -> np.ndarray:
    """IMAGE decoded and shrunk to ``max_side`` (``curation.prepare``); a file that cannot be read
    is a UsageError naming it."""
    from curation.decode import DecodeReject
    from curation.prepare import load_rgb

    try:
        return load_rgb(path, max_side)
    except FileNotFoundError:
        raise UsageError(f"no such image: {path}") from None
    except (OSError, DecodeReject) as exc:
        detail = exc.detail if isinstance(exc, DecodeReject) else str(exc)
        raise UsageError(f"cannot read {path}: {detail}") from None


def _default_output(image: str, suffix: str) -> str:
    stem = os.path.splitext(os.path.basename(image))[0]
    return f"{stem}.{suffix}.png"


def _write_png(path: str, img: np.ndarray) -> None:
    import cv2

    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, img):
        raise UsageError(f"cannot write {path} (is it a .png path in a writable folder?)")


def run(args: argparse.Namespace) -> int:
    import lineart
    from lineart.sheet import contact_sheet

    if args.list:
        for name in lineart.available():
            entry = lineart.info(name)
            print(f"{name:<20} {entry.kind:<10} {entry.summary}")
        return 0
    if args.compare:
        return run_compare(args)
    if args.only or args.shared or args.limit:
        raise UsageError("--only, --shared and --limit go with --compare")
    if args.all and (args.option or args.weights):
        raise UsageError("--option and --weights go with --extractor, not --all")
    if args.image is None:
        raise UsageError("extract needs an IMAGE (or --list, --compare)")
    image = load_image(args.image, 1024 if args.max_side is None else args.max_side)
    batch = image[None]

    if args.extractor:
        options = dict(_parse_option(o) for o in args.option)
        try:
            ext = lineart.create(args.extractor, weights=args.weights, device=args.device, **options)
        except lineart.UnknownExtractorError as exc:
            raise UsageError(str(exc)) from None
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise UsageError(f"{args.extractor}: {exc}") from None
        out = args.output or _default_output(args.image, args.extractor)
        _write_png(out, ext(batch)[0])
        print(out)
        return 0

    drawings, skipped = [], []
    for name in lineart.available():
        try:
            ext = lineart.create(name, device=args.device)
        # what --extractor turns into a usage error (no weights: WeightsError, a ValueError; no CUDA):
        # report it, go on with the rest; anything else is a bug, not a skip
        except (TypeError, ValueError, OSError) as exc:
            skipped.append((name, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        drawings.append((name, ext(batch)[0]))
    out = args.output or _default_output(args.image, "all")
    _write_png(out, contact_sheet(image, drawings))
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"{out}: {len(drawings)} extractors ({', '.join(n for n, _ in drawings)})"
          + (f"; skipped {len(skipped)}" if skipped else ""))  # fmt: skip
    return 0


def run_compare(args: argparse.Namespace) -> int:
    import json

    import lineart
    from pipelines import scorecard

    from ..paths import shared_dir

    if args.image or args.weights:
        raise UsageError("--compare takes no IMAGE or --weights (learned ones use the shared checkpoints)")
    options = dict(_parse_option(o) for o in args.option)
    shared = args.shared or shared_dir()
    if not shared or not os.path.isdir(os.path.join(shared, "corpus")):
        raise UsageError(
            f"--compare needs the shared folder with corpus/ (got {shared or '../shared: absent'})"
        )
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else lineart.available()
    unknown = sorted(set(names) - set(lineart.available()))
    if unknown:
        raise UsageError(
            f"unknown extractor(s) {', '.join(unknown)}; available: {', '.join(lineart.available())}"
        )
    if args.limit < 0:
        raise UsageError("--limit must be >= 0")
    try:  # every option must suit every extractor compared (e.g. --only pidinet --option reference_exact=true)
        cands = scorecard.candidates(names, shared, options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--option: {exc}") from None
    max_side = scorecard.MAX_SIDE if args.max_side is None else args.max_side
    card = scorecard.score(
        cands, shared, max_side=max_side, limit=args.limit,
        progress=lambda n: print(f"compare: {n} ...", file=sys.stderr, flush=True),
    )  # fmt: skip
    out = args.output or "compare"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.json"), "w", encoding="utf-8") as fh:
        json.dump(scorecard.to_json(card), fh, indent=2, sort_keys=True)
    sheet = scorecard.write_sheet(card, out)
    print(scorecard.markdown_table(card))
    print(f"{sheet}; {os.path.join(out, 'compare.json')}", file=sys.stderr)
    return 0
