"""Score every extractor against real line art and the pair-quality check: the ``extract --compare``
table and the ``lineart_quality`` bench section. It reads images with curation's decoder and runs
lineart's extractors, so it stands above both floors.

Two kinds of evidence, both from the read-only shared folder (``../shared``):

* **pairs**: illustrations with a line drawing of the same picture (corpus/SOURCES.md "Pairs",
  corpus/calibration/README.md "Illustration / line pairs"); each extractor's drawing is scored
  with lineart.compare (edge F1 at 2 px after thinning, Chamfer, ink ratio);
* **drop sets**: the shared illustrations (photos left out) and the calibration set's ``keep_*``
  images; the drop rate is the share of drawings the build's pair-quality check would drop.

Images are shrunk to ``max_side`` (768 by default, the size pair quality was calibrated at).
``write_sheet`` writes an HTML contact sheet (every name escaped) with the drawings as PNG files.
"""

from __future__ import annotations

import csv
import html
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from curation.decode import DecodeReject
from curation.prepare import load_rgb
from lineart import compare, quality
from lineart.registry import create, info

MAX_SIDE = 768

# (illustration, line drawing, how the lines were made), relative to <shared>/corpus.
PAIRS = (
    ("illustrations/linedistiller_001.png", "sketches/linedistiller_001_lines.png", "LineDistiller target"),
    ("illustrations/linedistiller_002.png", "sketches/linedistiller_002_lines.png", "LineDistiller target"),
    ("illustrations/linedistiller_003.png", "sketches/linedistiller_003_model_lines.png", "LineDistiller model"),
    ("illustrations/sketchkeras_001.jpg", "sketches/sketchkeras_001_model_sketchkeras.jpg", "sketchKeras model"),
    ("illustrations/sketchkeras_002.jpg", "sketches/sketchkeras_002_model_sketchkeras.jpg", "sketchKeras model"),
    ("calibration/keep_scene_003.png", "calibration/reject_sketch_006.png", "Canny map"),
    ("calibration/keep_lowsat_003.jpg", "calibration/reject_sketch_007.png", "HED map"),
    ("calibration/keep_scene_010.jpg", "calibration/reject_sketch_003.jpg", "line version"),
    ("calibration/keep_scene_011.jpg", "calibration/reject_sketch_004.jpg", "line version"),
    ("calibration/reject_monochrome_008.png", "calibration/reject_sketch_002.png", "line version of a screentone page"),
)  # fmt: skip
MAX_ASPECT_MISMATCH = 0.02  # a reference of another shape (a crop) cannot be aligned: skipped, said so

# Real checkpoints kept in the shared folder: <shared>/weights/<folder>/<file>.
SHARED_WEIGHTS = {"pidinet": "pidinet", "mteed": "mteed"}


@dataclass(frozen=True)
class Pair:
    name: str
    image: str
    lines: str
    how: str


@dataclass
class Candidate:
    """An extractor to score, or the reason it cannot be (``run`` is None)."""

    name: str
    kind: str
    run: Callable[[np.ndarray], np.ndarray] | None
    note: str = ""


@dataclass
class Scorecard:
    max_side: int
    pairs: list[Pair]
    skipped_pairs: list[tuple[str, str]]
    drop_sets: dict[str, list[str]]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # per extractor
    drawings: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (pair, extractor) -> drawing
    inputs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # pair -> (rgb, reference)


def real_pairs(shared: str) -> tuple[list[Pair], list[tuple[str, str]]]:
    """The pairs present under ``shared``, and (name, reason) for those that cannot be used."""
    pairs, skipped = [], []
    for image, lines, how in PAIRS:
        name = os.path.splitext(os.path.basename(image))[0]
        a, b = (os.path.join(shared, "corpus", p) for p in (image, lines))
        if not (os.path.isfile(a) and os.path.isfile(b)):
            skipped.append((name, "file missing"))
            continue
        (wa, ha), (wb, hb) = (_size(p) for p in (a, b))
        if abs((wa / ha) / (wb / hb) - 1) > MAX_ASPECT_MISMATCH:
            skipped.append((name, f"reference is {wb}x{hb} for a {wa}x{ha} image (a crop: cannot align)"))
            continue
        pairs.append(Pair(name, a, b, how))
    return pairs, skipped


def _size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def drop_sets(shared: str) -> dict[str, list[str]]:
    """``shared_illustrations`` (SOURCES.md kind ``illustration``) and ``calibration_keep`` (LABELS.csv)."""
    corpus = os.path.join(shared, "corpus")
    kinds = {}
    with open(os.path.join(corpus, "SOURCES.md"), encoding="utf-8") as fh:
        for line in fh:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) > 2 and os.path.splitext(cells[0])[1] in (".jpg", ".png", ".jpeg", ".webp"):
                kinds[cells[0]] = cells[1]
    folder = os.path.join(corpus, "illustrations")
    illustrations = [
        os.path.join(folder, f) for f in sorted(os.listdir(folder)) if kinds.get(f) == "illustration"
    ]
    calib = os.path.join(corpus, "calibration")
    with open(os.path.join(calib, "LABELS.csv"), encoding="utf-8", newline="") as fh:
        keep = sorted(
            os.path.join(calib, r["file"]) for r in csv.DictReader(fh) if r["label"].startswith("keep")
        )
    return {"shared_illustrations": illustrations, "calibration_keep": keep}


def candidates(
    names: Iterable[str], shared: str | None, options: Mapping[str, Any] | None = None
) -> list[Candidate]:
    """Each extractor built at its defaults plus ``options`` (each must suit every one); a learned
    one with the real checkpoint from ``shared`` or the weights cache (never downloaded here), else
    a note saying there are no weights."""
    options = dict(options or {})
    from groundwork.checkpoints import cache_dir

    out = []
    for name in names:
        entry = info(name)
        if entry.kind == "classical":
            out.append(Candidate(name, entry.kind, create(name, **options)))
            continue
        filename = _weights_filename(name)
        paths = [os.path.join(cache_dir(), filename)] if filename else []
        if shared and name in SHARED_WEIGHTS and filename:
            paths.insert(0, os.path.join(shared, "weights", SHARED_WEIGHTS[name], filename))
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            out.append(Candidate(name, entry.kind, None, f"no weights here ({filename or 'unknown file'})"))
            continue
        out.append(Candidate(name, entry.kind, create(name, weights=path, **options), os.path.basename(path)))
    return out


def _weights_filename(name: str) -> str | None:
    from lineart import nets  # noqa: F401  (registration)
    from lineart.nets.base import NetSpec

    for module in ("pidinet", "teed", "informative", "anime2sketch", "hed", "manga_line"):
        mod = sys.modules.get(f"lineart.nets.{module}")
        for value in vars(mod).values() if mod else ():
            if isinstance(value, NetSpec) and value.name == name:
                return value.weights.filename
    return None


def score(
    cands: list[Candidate],
    shared: str,
    max_side: int = MAX_SIDE,
    limit: int = 0,
    keep_drawings: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Scorecard:
    """Run every candidate on the pairs and the drop sets (``limit`` > 0: that many images per set)."""
    pairs, skipped = real_pairs(shared)
    sets = {k: v[:limit] if limit else v for k, v in drop_sets(shared).items()}
    card = Scorecard(max_side, pairs, skipped, sets)
    for pair in pairs:
        rgb = load_rgb(pair.image, max_side)
        ref = compare.reference_lines(load_rgb(pair.lines, 0), (rgb.shape[1], rgb.shape[0]))
        card.inputs[pair.name] = (rgb, ref)
    set_images = {k: [_load_or_none(p, max_side) for p in v] for k, v in sets.items()}
    pq = quality.PairQuality()
    for cand in cands:
        if cand.run is None:
            card.rows[cand.name] = {"kind": cand.kind, "note": cand.note}
            continue
        if progress:
            progress(cand.name)
        per_pair = {}
        for pair in pairs:
            rgb, ref = card.inputs[pair.name]
            drawing = cand.run(rgb[None])[0]
            per_pair[pair.name] = compare.edge_scores(drawing, ref)
            if keep_drawings:
                card.drawings[(pair.name, cand.name)] = drawing
        drops: dict[str, dict[str, Any]] = {}
        for set_name, images in set_images.items():
            dropped = []
            for path, rgb in zip(sets[set_name], images, strict=True):
                if rgb is None:
                    continue
                problem, reason, _ = quality.judge(cand.run(rgb[None])[0], pq)
                if problem != "ok":
                    dropped.append({"image": os.path.basename(path), "problem": problem, "reason": reason})
            n = sum(r is not None for r in images)
            drops[set_name] = {"images": n, "dropped": len(dropped), "rate": len(dropped) / n if n else 0.0,
                               "which": dropped}  # fmt: skip
        card.rows[cand.name] = {"kind": cand.kind, "note": cand.note, **_summary(per_pair, drops),
                                "pairs": per_pair, "drops": drops}  # fmt: skip
    return card


def _load_or_none(path: str, max_side: int) -> np.ndarray | None:
    try:
        return load_rgb(path, max_side)
    except (OSError, DecodeReject):
        return None


def _summary(per_pair: dict[str, dict[str, float]], drops: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float:
        return statistics.fmean(s[key] for s in per_pair.values()) if per_pair else float("nan")

    total = sum(d["images"] for d in drops.values())
    dropped = sum(d["dropped"] for d in drops.values())
    return {
        "f1": mean("f1"),
        "precision": mean("precision"),
        "recall": mean("recall"),
        "chamfer": mean("chamfer"),
        "ink_ratio": statistics.median(s["ink_ratio"] for s in per_pair.values())
        if per_pair
        else float("nan"),
        "drop_rate": dropped / total if total else 0.0,
        **{f"drop_rate_{k}": d["rate"] for k, d in drops.items()},
    }


def to_json(card: Scorecard) -> dict[str, Any]:
    """The JSON-serialisable report (no pixels)."""
    return {
        "max_side": card.max_side,
        "tolerance_px": compare.TOLERANCE,
        "chamfer_cap_px": compare.CHAMFER_CAP,
        "pairs": [{"name": p.name, "how": p.how} for p in card.pairs],
        "skipped_pairs": [{"name": n, "why": w} for n, w in card.skipped_pairs],
        "drop_sets": {k: len(v) for k, v in card.drop_sets.items()},
        "extractors": card.rows,
    }


def markdown_table(card: Scorecard) -> str:
    """One row per extractor: F1, precision, recall, Chamfer, ink ratio, drop rates."""
    head = ("| extractor | kind | F1 | precision | recall | Chamfer px | ink ratio | drop rate | "
            "drop shared | drop calib keep |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    for name, r in card.rows.items():
        if "f1" not in r:
            lines.append(f"| {name} | {r['kind']} | — | — | — | — | — | — | — | — ({r['note']}) |")
            continue
        d = r["drops"]
        cells = [f"{r['f1']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['chamfer']:.2f}",
                 f"{r['ink_ratio']:.2f}", f"{r['drop_rate']:.1%}"]  # fmt: skip
        cells += [f"{v['dropped']}/{v['images']}" for v in d.values()]
        lines.append(f"| {name} | {r['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_sheet(card: Scorecard, out_dir: str) -> str:
    """``out_dir/index.html`` (the table, then one row of images per pair) and its PNGs; returns the path."""
    img_dir = os.path.join(out_dir, "img")
    os.makedirs(img_dir, exist_ok=True)
    esc = html.escape

    def png(name: str, img: np.ndarray) -> str:
        fname = re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png"  # names are free text; file names are not
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        if not cv2.imwrite(os.path.join(img_dir, fname), bgr):
            raise OSError(f"cannot write {os.path.join(img_dir, fname)}")
        return "img/" + fname

    def cell(src: str, caption: str) -> str:
        return (f'<td><img src="{esc(src, quote=True)}" width="256"><br><small>{esc(caption)}</small></td>')  # fmt: skip

    out = ["<!doctype html><meta charset='utf-8'><title>line extractors vs real line art</title>",
           "<style>td{vertical-align:top;text-align:center} table{border-collapse:collapse} "
           "th,td{border:1px solid #ccc;padding:2px}</style>",
           f"<h1>Line extractors vs real line art (long side {card.max_side} px)</h1><table><tr>"]  # fmt: skip
    cols = ["extractor", "kind", "F1", "Chamfer px", "ink ratio", "drop rate", "note"]
    out.append("".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
    for name, r in card.rows.items():
        vals = [name, r["kind"]] + (
            [f"{r['f1']:.3f}", f"{r['chamfer']:.2f}", f"{r['ink_ratio']:.2f}", f"{r['drop_rate']:.1%}"]
            if "f1" in r
            else ["—"] * 4  # fmt: skip
        )
        out.append("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in [*vals, r.get("note", "")]) + "</tr>")
    out.append("</table>")
    if card.skipped_pairs:
        out.append("<p>Skipped pairs: " + "; ".join(esc(f"{n}: {w}") for n, w in card.skipped_pairs) + "</p>")
    out.append("<h2>Pairs</h2><table>")
    for pair in card.pairs:
        rgb, ref = card.inputs[pair.name]
        row = [cell(png(f"{pair.name}.input", rgb), pair.name),
               cell(png(f"{pair.name}.reference", ref), f"reference ({pair.how})")]  # fmt: skip
        for name, r in card.rows.items():
            drawing = card.drawings.get((pair.name, name))
            if drawing is not None:
                s = r["pairs"][pair.name]
                row.append(cell(png(f"{pair.name}.{name}", drawing),
                                f"{name}: F1 {s['f1']:.3f}, Chamfer {s['chamfer']:.2f}"))  # fmt: skip
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</table><h2>Dropped by pair quality</h2><ul>")
    for name, r in card.rows.items():
        for set_name, d in r.get("drops", {}).items():
            for w in d["which"]:
                out.append(f"<li>{esc(name)} / {esc(set_name)} / {esc(w['image'])}: {esc(w['reason'])}</li>")
    out.append("</ul>")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
    return path
