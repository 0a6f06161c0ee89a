"""``linepairs sample CKPT SKETCH [--tags "..."] -o out.png``: paint one line drawing with a W-net checkpoint.

Classifier-free guidance on the tags and on the sketch (two scales); without ``--tags`` the
checkpoint's ``sample.prompt``, the seed's default "1girl, masterpiece, best quality, ultra-detailed,
illustration"."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="paint a line drawing with a W-net checkpoint")
    p.add_argument(
        "ckpt", metavar="CKPT", help="a checkpoint folder, or a run folder (its newest checkpoint)"
    )
    p.add_argument("sketch", metavar="SKETCH", help="line drawing image: dark lines on white paper")
    p.add_argument(
        "--tags",
        help='comma-separated; "category:tag" for non-general tags '
        "(default: the checkpoint's sample.prompt, the seed's default prompt)",
    )
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: the checkpoint's sample.steps)")
    p.add_argument("--sampler", choices=["ddim", "euler"])
    p.add_argument("--guidance-tags", type=float, help="classifier-free guidance on the tags (1: none)")
    p.add_argument("--guidance-sketch", type=float, help="classifier-free guidance on the sketch (1: none)")
    p.add_argument(
        "--sketch-scale", type=float, help="multiplies the injected sketch features (0: ignore the sketch)"
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import cv2

    from wnet.checkpoint import CheckpointError
    from wnet.config import WnetConfigError
    from wnet.painter import Painter
    from wnet.sources import SourceError
    from wnet.space import SpaceError
    from wnet.vocab import parse_tags

    from ..errors import UsageError
    from .train import require_diffusers

    require_diffusers()
    try:
        painter = Painter.from_checkpoint(args.ckpt, device=args.device)
    except (CheckpointError, WnetConfigError, SpaceError, SourceError) as exc:
        raise UsageError(str(exc)) from None
    text = painter.cfg.sample.prompt if args.tags is None else args.tags
    # The scan's decoder: transparency is flattened onto white paper (an RGBA line layer with black
    # under its transparent pixels is lines on white, not all ink), EXIF turns, 16-bit scales.
    from curation.decode import DecodeReject
    from curation.prepare import load_rgb
    from wnet.sketch import sketch_input

    try:
        rgb = load_rgb(args.sketch)
    except (OSError, DecodeReject) as exc:
        raise UsageError(f"cannot read the sketch {args.sketch!r} as an image ({exc})") from None
    gray = sketch_input(rgb, painter.cfg.train.max_side, painter.size_multiple)
    h, w = gray.shape
    changes = {k: v for k, v in {"steps": args.steps, "sampler": args.sampler, "guidance_tags": args.guidance_tags,
               "guidance_sketch": args.guidance_sketch, "sketch_scale": args.sketch_scale}.items() if v is not None}  # fmt: skip
    sample_cfg = dataclasses.replace(painter.cfg.sample, **changes)
    wanted = parse_tags(text)
    image = painter.paint(gray[None], [wanted], seed=args.seed, sample_cfg=sample_cfg)[0]
    if painter.parts.text == "tags":
        ids = painter.vocab.encode(wanted, 1 + sum(len(v) for v in wanted.values()))
        unknown = [t for t in painter.vocab.decode(ids) if t.startswith("<unk")]
        if unknown:
            print(
                f"note: {len(unknown)} tag(s) are not in the checkpoint's vocabulary and were read as unknown"
            )
    if not cv2.imwrite(args.output, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise UsageError(f"cannot write {args.output}")
    print(f"{args.output}: {w}x{h}, step {painter.step}")
    return 0
