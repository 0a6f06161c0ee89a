"""``linepairs export``: the driver. Plan every sample's fate, drawing and repeats from the manifest
and the weight version; write each shard's samples into DEST (shards read once, a few at a time);
then the trainer's config, README.md, samples.parquet and export.json (last: the marker).

Resume: DEST records the request (``_export/request.json``); each shard's files are followed by
its part of samples.parquet and a marker. A re-run skips marked shards and redoes the rest (the
same bytes: nothing depends on time or order), a finished export says so, and a DEST holding
another export (another build, weight version, target or option) is refused naming the difference.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sharding.buckets import preset_for
from sharding.captions import CaptionError, CaptionRule, caption
from sharding.samplejson import tags_of

from ..config import diff_dicts
from ..progress import Progress
from . import repeats as rep
from .dest import EXPORT_JSON, README, SAMPLES, STATE_DIR, Dest, StorageError
from .drawings import CASES, LEFT_OUT, DrawingChoice, DrawingError, invert_png, key_uniforms
from .source import Build, ExportError, open_build, stream_samples
from .target import MODULES, TRAIN, VALIDATION, Context, Group, Target, get

EXPORT_VERSION = 1  # DEST's own contract (docs/export.md)
LEFT = "left_out"
NO_DRAWING, NO_DRAWS = "no_drawing", "no_draws"  # why a sample is left out
KEY_CHUNK = 65536  # keys hashed at a time (bounded Python objects)

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("bucket", pa.string()),  # "WxH"
        pa.field("weight", pa.float64()),
        pa.field("fate", pa.string()),  # train, validation, left_out
        pa.field("reason", pa.string()),  # why left out ("" otherwise)
        pa.field("extractor", pa.string()),  # the drawing written ("" when left out)
        pa.field("drawing", pa.string()),  # first_choice, fallback, left_out
        pa.field("repeats", pa.int64()),  # draws per epoch (train), 1 (validation), 0 (left out)
        pa.field("group", pa.string()),  # the folder (subset / dataset) it is in
        pa.field("keep_tokens", pa.int32()),
        pa.field("caption_tags", pa.int32()),
        pa.field("caption", pa.string()),
        pa.field("image", pa.string()),  # files, relative to DEST ("" when none)
        pa.field("conditioning", pa.string()),
        pa.field("caption_file", pa.string()),
    ]
)


class ExportRefused(Exception):
    """DEST holds something else; the message says what differs."""


@dataclass
class ExportRequest:
    out: str
    dest: str
    target: str
    weights: str | None = None  # weight version (None: the active one)
    extractor: str | None = None  # "canny,xdog=0" (drawings.py)
    invert: bool | None = None  # None: the target's default polarity
    caption_order: str | None = None  # "character,copyright,artist,general" (sharding/captions.py)
    underscores: bool = False
    val: int = 0
    repeat_levels: int = rep.DEFAULT_LEVELS
    resolution: int | None = None  # None: the target's default
    seed: int = 0
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)  # never recorded
    workers: int = 4
    show_progress: bool = True


@dataclass
class ExportSummary:
    dest: str
    report: dict[str, Any]
    already_complete: bool = False
    seconds: float = 0.0

    def lines(self) -> list[str]:
        r = self.report
        c = r["counts"]
        left = ", ".join(f"{k} {v}" for k, v in c["left_out"].items() if v) or "none"
        err = r["max_abs_error"]
        lines = [
            f"export      {r['target']} from {r['source']['out']} (weights {r['weights']['version']})",
            f"samples     {c['train']} train ({r['repeats']['draws']} draws per epoch), {c['validation']} "
            f"validation; left out: {left}",
            f"drawings    {', '.join(f'{k} {v}' for k, v in r['drawings']['written'].items())} "
            f"({r['drawings']['polarity'].replace('_', ' ')}); fallback {r['drawings']['cases']['fallback']}",
            f"shares      max |realised - intended|: source {err['source']:.2%}, tier {err['tier']:.2%}, "
            f"bucket {err['bucket']:.2%}",
        ]
        lines += [f"warning     {w}" for w in r["warnings"]]
        if self.seconds and not self.already_complete:
            lines.append(
                f"throughput  {r['counts']['written'] / self.seconds:.1f} samples/s over {self.seconds:.1f} s"
            )
        lines.append(f"output      {self.dest}")
        lines.append(f"next        see {self.dest}/README.md for the training command")
        return lines


@dataclass
class Plan:
    """Every sample's fate, in population order."""

    fate: np.ndarray  # object array of TRAIN / VALIDATION / LEFT
    reason: np.ndarray  # object array
    choice: np.ndarray  # index into choice.names, -1 when none
    case: np.ndarray  # FIRST / FALLBACK / LEFT_OUT
    counts: np.ndarray  # int64 draws per epoch (train), 1 (validation), 0
    repeats: rep.Repeats
    drawing: DrawingChoice
    invert: bool
    rule: CaptionRule
    resolution: int
    shares: dict[str, Any]
    warnings: list[str]


def _labels(build: Build) -> dict[str, np.ndarray]:
    pop = build.pop
    names = lambda xs: np.asarray(xs, dtype=object)  # noqa: E731
    buckets = names([f"{w}x{h}" for w, h in pop.buckets])
    return {
        "source": names(pop.source_names)[pop.sources],
        "tier": names(pop.tier_names)[pop.tiers],
        "bucket": buckets[pop.bucket_of],
    }


def _uniforms(build: Build, seed: int, salt: str) -> np.ndarray:
    keys = build.pop.keys
    return np.concatenate(
        [
            key_uniforms(keys.slice(i, KEY_CHUNK).to_pylist(), seed, salt)
            for i in range(0, len(keys), KEY_CHUNK)
        ]
        or [np.zeros(0)]
    )


def plan_export(build: Build, req: ExportRequest, target: Target) -> Plan:
    """Fates, drawings and repeats of every sample, from the manifest and the weights alone."""
    pop = build.pop
    n = len(pop)
    try:
        drawing = DrawingChoice.parse(req.extractor, build.extractors)
        rule = CaptionRule.parse(req.caption_order, req.underscores)
    except (DrawingError, CaptionError) as exc:
        raise ExportError(str(exc)) from None
    choice, case = drawing.choose(
        _uniforms(build, req.seed, "drawing"), pop.extractor_names, pop.extractor_sets
    )
    fate = np.full(n, TRAIN, dtype=object)
    reason = np.full(n, "", dtype=object)
    fate[case == LEFT_OUT], reason[case == LEFT_OUT] = LEFT, NO_DRAWING
    if req.val:
        candidates = np.flatnonzero(fate == TRAIN)
        if req.val >= len(candidates):
            raise ExportError(f"--val {req.val}: the build has only {len(candidates)} samples to export")
        held = candidates[
            np.argsort(_uniforms(build, req.seed, "validation")[candidates], kind="stable")[: req.val]
        ]
        fate[held] = VALIDATION
    labels = _labels(build)
    train = fate == TRAIN
    if not train.any():
        raise ExportError(
            f"nothing to train on: {int(np.sum(case == LEFT_OUT))} of {n} samples have none of the drawings "
            f"{', '.join(drawing.names)} and {int(np.sum(fate == VALIDATION))} are held out"
        )
    # rounding errors are carried along source, tier, bucket (each group keeps its share) and, within
    # a group, by weight (samples that round between the same two counts sit together): repeats.py
    order = np.lexsort((np.arange(n), pop.weights, pop.bucket_of, pop.tiers, pop.sources))
    weights = carried_weights(pop.weights, train, [pop.sources, pop.tiers, pop.bucket_of])
    solved = rep.solve(weights, order, req.repeat_levels if target.levels_limited else None)
    counts = solved.counts
    dropped = train & (counts == 0)
    fate[dropped], reason[dropped] = LEFT, NO_DRAWS
    counts = np.where(fate == VALIDATION, 1, counts)
    table = rep.share_table(pop.weights, np.where(fate == TRAIN, counts, 0), labels)
    resolution = req.resolution or target.resolution
    lost = [k for k, v in table["source"].items() if v["intended"] > 0 and v["realised"] == 0]
    warnings = _bucket_warnings(build, resolution, target) + [
        f"source {k!r} has no sample left to export (its drawings are not in --extractor, or all are held "
        f"out): its {table['source'][k]['intended']:.1%} of the draws goes to the other sources"
        for k in lost
    ]
    return Plan(
        fate=fate, reason=reason, choice=choice, case=case, counts=counts, repeats=solved, drawing=drawing,
        invert=target.invert if req.invert is None else req.invert, rule=rule, resolution=resolution,
        shares=table, warnings=warnings,
    )  # fmt: skip


def carried_weights(weights: np.ndarray, kept: np.ndarray, codes: list[np.ndarray]) -> np.ndarray:
    """The weights of the ``kept`` samples, scaled so that they carry the draws of the samples held
    out or left out: within their (source, tier, bucket) cell, else their (source, tier), else their
    source (``codes``: finest grouping first). So every source, tier and bucket keeps its intended
    share; only a source with nothing left loses its draws (and export.json says so)."""
    out = np.where(kept, weights, 0.0)
    pending = np.where(kept, 0.0, weights)  # draws still looking for a sample to carry them
    for depth in range(len(codes), 0, -1):
        cell = np.unique(np.stack(codes[:depth], 1), axis=0, return_inverse=True)[1].reshape(-1)
        have = np.bincount(cell, weights=out)
        need = np.bincount(cell, weights=pending, minlength=len(have))
        factor = np.divide(have + need, have, out=np.ones_like(have), where=have > 0)
        out = out * factor[cell]
        pending = np.where(have[cell] > 0, 0.0, pending)
    return out


def _bucket_warnings(build: Build, resolution: int, target: Target) -> list[str]:
    largest = max(w * h for w, h in build.pop.buckets)
    if largest >= resolution * resolution:
        return []
    preset = preset_for(resolution)
    fix = (
        f'build with `[buckets] preset = "{preset}"`' if preset else "build with a larger [buckets] max_area"
    )
    return [
        f"the build's largest bucket ({largest} pixels) is smaller than the {resolution}x{resolution} this "
        f"export trains at (--resolution): {target.name} will upscale the images or train below the model's "
        f"size; {fix} (docs/config.md, Buckets)"
    ]


def identity(build: Build, req: ExportRequest, plan: Plan) -> dict[str, Any]:
    """What DEST records: a re-run with the same identity resumes, any other is refused."""
    return {
        "export_version": EXPORT_VERSION,
        "target": req.target,
        "build": {"fingerprint": build.fingerprint, "contract": build.info.get("contract")},
        "weights": {"version": build.pop.weights_name, "sha256": build.weights_sha256},
        "options": {
            "extractor": plan.drawing.describe(),
            "invert": plan.invert,
            "caption_rule": plan.rule.describe(),
            "val": req.val,
            "repeat_levels": req.repeat_levels,
            "resolution": plan.resolution,
            "seed": req.seed,
        },
    }


def check_dest(dest: Dest, ident: dict[str, Any]) -> bool:
    """True when DEST already holds this export, complete; ExportRefused when it holds another."""
    if dest.exists(dest.request):
        old = dest.read_json(dest.request)
        if old != ident:
            changes = diff_dicts(old, ident)
            shown = "; ".join(changes[:6]) + (" ..." if len(changes) > 6 else "")
            raise ExportRefused(
                f"{dest.out} holds another export ({shown}); choose another DEST or delete it"
            )
        return dest.exists(EXPORT_JSON) and dest.read_json(EXPORT_JSON).get("complete") is True
    if not dest.is_empty():
        raise ExportRefused(
            f"{dest.out} exists, is not empty and is not a linepairs export; choose another DEST"
        )
    dest.io.ensure_root()
    dest.write_json(dest.request, ident)
    return False


# ---------------------------------------------------------------- one shard


@dataclass
class ShardJob:
    build: Build
    dest: Dest
    target: Target
    plan: Plan

    def run(self, shard: str, rows: np.ndarray) -> pa.Table:
        """Write the files of ``shard``'s exported samples; return its samples.parquet rows."""
        pop, plan = self.build.pop, self.plan
        keys = pop.keys.take(pa.array(rows)).to_pylist()
        todo = {k: int(r) for k, r in zip(keys, rows) if plan.fate[r] != LEFT}
        done: dict[int, dict[str, Any]] = {}
        if todo:
            for key, files in stream_samples(self.build.layout, shard):
                row = todo.pop(key, None)
                if row is not None:
                    done[row] = self.write_sample(shard, key, row, files)
            if todo:
                raise ExportError(
                    f"shard {shard}: sample(s) {', '.join(sorted(todo)[:3])} of the manifest are not in it"
                )
        self.dest.sync()
        records = [done.get(int(r)) or self.left_out(k, int(r)) for k, r in zip(keys, rows)]
        return pa.Table.from_pylist(records, schema=SAMPLES_SCHEMA)

    def base(self, key: str, row: int) -> dict[str, Any]:
        pop, plan = self.build.pop, self.plan
        w, h = pop.buckets[pop.bucket_of[row]]
        return {
            "key": key, "source": pop.source_names[pop.sources[row]], "tier": pop.tier_names[pop.tiers[row]],
            "bucket": f"{w}x{h}", "weight": float(pop.weights[row]), "fate": plan.fate[row],
            "reason": plan.reason[row], "drawing": CASES[plan.case[row]],
        }  # fmt: skip

    def left_out(self, key: str, row: int) -> dict[str, Any]:
        return {**self.base(key, row), "extractor": "", "repeats": 0, "group": "", "keep_tokens": 0,
                "caption_tags": 0, "caption": "", "image": "", "conditioning": "", "caption_file": ""}  # fmt: skip

    def write_sample(self, shard: str, key: str, row: int, files: dict[str, bytes]) -> dict[str, Any]:
        plan, target = self.plan, self.target
        name = plan.drawing.names[plan.choice[row]]
        image_ext = next((e for e in ("jpg", "webp") if e in files), None)
        drawing = files.get(f"lineart.{name}.png")
        if image_ext is None or drawing is None or "json" not in files:
            raise ExportError(
                f"shard {shard}: sample {key} lacks its illustration, json or lineart.{name}.png"
            )
        try:
            meta = json.loads(files["json"])
            prose = meta.get("caption")
            cap = caption(tags_of(meta), plan.rule, prose if isinstance(prose, str) else None)
            if plan.invert:
                drawing = invert_png(drawing)
            image = files[image_ext]
            out_ext = target.image_ext(image_ext)
            if out_ext != image_ext:
                image = _reencode(image, out_ext)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ExportError(f"shard {shard}: sample {key}: {exc}") from None
        split = plan.fate[row]
        repeats = int(plan.counts[row])
        group = target.group(repeats, cap.keep_tokens) if split == TRAIN else ""
        place = target.place(key, split, group, out_ext)
        self.dest.write_file(place.image, image)
        self.dest.write_file(place.conditioning, drawing)
        caption_file = place.caption if place.caption and (cap.text or target.empty_caption_file) else ""
        if caption_file:
            self.dest.write_file(caption_file, cap.text.encode("utf-8"))
        return {
            **self.base(key, row), "extractor": name, "repeats": repeats, "group": group,
            "keep_tokens": cap.keep_tokens, "caption_tags": cap.tags, "caption": cap.text,
            "image": place.image, "conditioning": place.conditioning, "caption_file": caption_file,
        }  # fmt: skip


def _reencode(data: bytes, ext: str) -> bytes:
    """The illustration in another format (PNG: lossless from the decoded pixels)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("illustration does not decode")
    ok, buf = cv2.imencode(f".{ext}", image, [cv2.IMWRITE_PNG_COMPRESSION, 1] if ext == "png" else [])
    if not ok:
        raise ValueError(f"could not encode the illustration as {ext}")
    return buf.tobytes()


# ---------------------------------------------------------------- the export


def _write_shards(
    job: ShardJob, todo: list[str], rows_of: dict[str, np.ndarray], progress: Progress, workers: int
) -> None:
    dest = job.dest

    def one(shard: str) -> int:
        part = job.run(shard, rows_of[shard])
        dest.write_parquet(dest.part(shard), part)
        dest.write_json(
            dest.marker(shard), {"shard": shard, "samples": part.num_rows}
        )  # last: the shard is done
        return len(rows_of[shard])

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        pending: set[concurrent.futures.Future] = set()
        queue = iter(todo)
        for shard in queue:  # at most 2 shards per worker in flight: memory stays bounded
            pending.add(pool.submit(one, shard))
            if len(pending) >= 2 * max(1, workers):
                finished, pending = concurrent.futures.wait(
                    pending, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for f in finished:
                    progress.update(f.result())
        for f in concurrent.futures.as_completed(pending):
            progress.update(f.result())


def _parts(dest: Dest, shards: list[str]) -> Callable[[], Iterator[pa.Table]]:
    def gen() -> Iterator[pa.Table]:
        for shard in shards:
            yield dest.read_parquet(dest.part(shard))

    return gen


def _summarise_parts(parts: Callable[[], Iterator[pa.Table]], dest: Dest) -> dict[str, Any]:
    """samples.parquet (the parts in shard order) and the tallies export.json and the configs need."""
    groups: dict[str, Group] = {}
    tally: dict[str, dict[str, int]] = {"written": {}, "keep_tokens": {}}
    empty = written = 0
    buckets: set[str] = set()
    pairs: list[tuple[str, str]] = []
    with dest.open_output(SAMPLES) as fh:
        writer = pq.ParquetWriter(fh, SAMPLES_SCHEMA, compression="zstd")
        for table in parts():
            writer.write_table(table)
            kept = table.filter(pc.not_equal(table["fate"], LEFT))
            for r in kept.select(["fate", "group", "repeats", "keep_tokens", "extractor", "caption",
                                  "bucket", "conditioning"]).to_pylist():  # fmt: skip
                written += 1
                tally["written"][r["extractor"]] = tally["written"].get(r["extractor"], 0) + 1
                empty += r["caption"] == ""
                buckets.add(r["bucket"])
                if r["fate"] == TRAIN and r["group"]:
                    g = groups.setdefault(r["group"], Group(r["group"], r["repeats"], r["keep_tokens"]))
                    g.samples += 1
                if r["fate"] == TRAIN:
                    k = str(r["keep_tokens"])
                    tally["keep_tokens"][k] = tally["keep_tokens"].get(k, 0) + 1
                elif len(pairs) < 4:
                    pairs.append((dest.display(r["conditioning"]), r["caption"]))
        writer.close()
    return {
        "groups": [groups[k] for k in sorted(groups)],
        "written": written,
        "drawings": dict(sorted(tally["written"].items())),
        "keep_tokens": dict(sorted(tally["keep_tokens"].items(), key=lambda kv: int(kv[0]))),
        "empty_captions": empty,
        "buckets": sorted(tuple(int(v) for v in b.split("x")) for b in buckets),
        "validation_pairs": pairs,
    }


def _levels_record(levels: tuple[int, ...]) -> Any:
    return list(levels) if len(levels) <= 32 else {"count": len(levels), "min": levels[0], "max": levels[-1]}


def run_export(req: ExportRequest) -> ExportSummary:
    """Run or resume one export; safe to call again after a kill at any moment."""
    start = time.perf_counter()
    if req.target not in MODULES:
        raise ExportError(f"--to {req.target!r}: choose one of {', '.join(MODULES)}")
    if req.val < 0 or req.repeat_levels < 1 or (req.resolution is not None and req.resolution < 64):
        raise ExportError("--val must be >= 0, --repeat-levels >= 1 and --resolution >= 64")
    target = get(req.target)
    build = open_build(req.out, req.storage_options, req.weights)
    try:
        dest = Dest(req.dest, req.storage_options)
    except StorageError as exc:
        raise ExportError(str(exc)) from None
    if dest.out.rstrip("/") == build.layout.out.rstrip("/") or dest.out.startswith(
        build.layout.out.rstrip("/") + "/"
    ):
        raise ExportError(
            f"DEST {dest.out} is inside OUT {build.layout.out}; choose a DEST outside the build"
        )
    plan = plan_export(build, req, target)
    ident = identity(build, req, plan)
    if check_dest(dest, ident):
        return ExportSummary(dest.out, dest.read_json(EXPORT_JSON), already_complete=True)
    for warning in plan.warnings:
        if req.show_progress:
            print(f"linepairs export: warning: {warning}", file=sys.stderr, flush=True)

    rows_of = build.rows_by_shard()
    shards = sorted(rows_of)
    todo = [s for s in shards if not dest.exists(dest.marker(s))]
    progress = Progress("export", total=len(build.pop), unit="samples", enabled=req.show_progress)
    progress.update(sum(len(rows_of[s]) for s in shards if s not in todo))
    if len(todo) < len(shards) and dest.local:
        dest.remove_temp_files()  # a killed run's half-written names (never read by a trainer)
    try:
        _write_shards(ShardJob(build, dest, target, plan), todo, rows_of, progress, req.workers)
    finally:
        progress.close()

    parts = _parts(dest, shards)
    tallies = _summarise_parts(parts, dest)
    ctx = Context(
        dest=dest, groups=tallies["groups"], resolution=plan.resolution, buckets=tallies["buckets"],
        bucket_step=build.bucket_step, train=int(np.sum(plan.fate == TRAIN)),
        validation=int(np.sum(plan.fate == VALIDATION)), draws=int(plan.counts[plan.fate == TRAIN].sum()),
        polarity="white_on_black" if plan.invert else "black_on_white", parts=parts,
        notes=list(plan.warnings), validation_pairs=tallies["validation_pairs"],
    )  # fmt: skip
    target.finish(ctx)
    command = target.command(ctx)
    dest.write_bytes(README, target.readme(ctx, command).encode("utf-8"))
    report = _report(build, req, plan, ctx, tallies, command, target)
    dest.write_json(EXPORT_JSON, report)  # last: the marker of a complete export
    return ExportSummary(dest.out, report, seconds=time.perf_counter() - start)


def _report(build: Build, req: ExportRequest, plan: Plan, ctx: Context, tallies: dict[str, Any], command: str,
            target: Target) -> dict[str, Any]:  # fmt: skip
    reasons = {
        NO_DRAWING: int(np.sum(plan.reason == NO_DRAWING)),
        NO_DRAWS: int(np.sum(plan.reason == NO_DRAWS)),
    }
    cases = {name: int(np.sum(plan.case == i)) for i, name in enumerate(CASES)}
    return {
        "complete": True,
        "export_version": EXPORT_VERSION,
        "target": req.target,
        "source": {
            "out": build.layout.out,
            "fingerprint": build.fingerprint,
            "contract": build.info.get("contract"),
            "samples": len(build.pop),
        },  # fmt: skip
        "weights": {"version": build.pop.weights_name, "sha256": build.weights_sha256},
        "options": identity(build, req, plan)["options"],
        "drawings": {
            "choice": plan.drawing.describe(),
            "cases": cases,  # first choice, fallback to the next name, left out (no drawing of the list)
            "written": tallies["drawings"],
            "polarity": ctx.polarity,
            "polarity_reason": target.polarity_reason if plan.invert == target.invert else "asked for",
        },
        "captions": {
            "rule": plan.rule.describe(),
            "empty": tallies["empty_captions"],
            "empty_as": "an empty caption file"
            if target.empty_caption_file
            else "no caption file / an empty text",
            "keep_tokens": tallies["keep_tokens"],
        },
        "repeats": {
            "levels": _levels_record(plan.repeats.levels),
            "scale": plan.repeats.scale,
            "draws": ctx.draws,
            "groups": [dataclasses.asdict(g) for g in ctx.groups],
        },
        "counts": {
            "manifest": len(build.pop),
            "train": ctx.train,
            "validation": ctx.validation,
            "written": tallies["written"],
            "left_out": reasons,
        },
        "shares": plan.shares,  # per source, tier, bucket: intended (the weights) vs realised (the repeats)
        "max_abs_error": rep.max_error(plan.shares),
        "resolution": plan.resolution,
        "buckets": [f"{w}x{h}" for w, h in ctx.buckets],
        "warnings": ctx.notes,
        "files": {"config": target.config_file, "readme": README, "samples": SAMPLES, "state": STATE_DIR},
        "facts": ctx.facts,
        "command": command,
    }


__all__ = ["ExportError", "ExportRefused", "ExportRequest", "ExportSummary", "plan_export", "run_export"]
