"""``linepairs export``: the driver. Plan every sample's fate, drawing and repeats from the manifest
and the weight version; write each shard's samples into DEST (shards read once, a few at a time);
then the trainer's config, README.md, samples.parquet and export.json (last: the marker).

Resume: DEST records the request (``_export/request.json``); each shard's files are followed by
its part of samples.parquet and a marker. A re-run skips marked shards and redoes the rest (the
same bytes: nothing depends on time or order), a finished export says so, and a DEST holding
another export (another build, weight version, target or option) is refused naming the difference.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundwork.configtable import diff_dicts

from ..progress import Progress
from . import repeats as rep
from .dest import EXPORT_JSON, EXPORT_VERSION, README, SAMPLES, STATE_DIR, Dest, StorageError
from .drawings import CASES
from .plan import LEFT, NO_DRAWING, NO_DRAWS, Plan, identity, plan_export
from .request import ExportRequest
from .shards import SAMPLES_SCHEMA, ShardJob, write_shards
from .source import Build, ExportError, open_build
from .target import MODULES, TRAIN, VALIDATION, Context, Group, Target, get


class ExportRefused(Exception):
    """DEST holds something else; the message says what differs."""


@dataclass
class ExportSummary:
    dest: str
    report: dict[str, Any]
    already_complete: bool = False
    seconds: float = 0.0
    # wall seconds of each step (not in export.json, whose bytes a re-run reproduces)
    timings: dict[str, float] = field(default_factory=dict)

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


def finished(dest: Dest, shard: str) -> bool:
    """OUT's ``shard`` is in DEST: its marker is there and so are the files it lists, at their sizes."""
    if not dest.exists(dest.marker(shard)):
        return False
    return dest.intact(dest.read_json(dest.marker(shard)).get("files", {}))


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
    timings = {"plan": time.perf_counter() - start}
    ident = identity(build, req, plan)
    if check_dest(dest, ident):
        return ExportSummary(dest.out, dest.read_json(EXPORT_JSON), already_complete=True)
    for warning in plan.warnings:
        if req.show_progress:
            print(f"linepairs export: warning: {warning}", file=sys.stderr, flush=True)

    rows_of = build.rows_by_shard()
    shards = sorted(rows_of)
    todo = [s for s in shards if not finished(dest, s)]
    progress = Progress("export", total=len(build.pop), unit="samples", enabled=req.show_progress)
    progress.update(sum(len(rows_of[s]) for s in shards if s not in todo))
    if len(todo) < len(shards) and dest.local:
        dest.remove_temp_files()  # a killed run's half-written names (never read by a trainer)
    t, cpu = time.perf_counter(), time.process_time()
    try:
        write_shards(ShardJob(build, dest, target, plan), todo, rows_of, progress, req.workers)
    finally:
        progress.close()
    timings["shards"] = time.perf_counter() - t
    timings["shards_cpu"] = time.process_time() - cpu  # every thread's CPU: what a loaded machine hides
    t = time.perf_counter()

    parts = _parts(dest, shards)
    tallies = _summarise_parts(parts, dest)
    ctx = Context(
        dest=dest, groups=tallies["groups"], resolution=plan.resolution, buckets=tallies["buckets"],
        bucket_step=build.bucket_step, train=int(np.sum(plan.fate == TRAIN)),
        validation=int(np.sum(plan.fate == VALIDATION)), draws=int(plan.counts[plan.fate == TRAIN].sum()),
        polarity="white_on_black" if plan.invert else "black_on_white", parts=parts,
        notes=list(plan.warnings), validation_pairs=tallies["validation_pairs"],
    )  # fmt: skip
    if not dest.local:
        ctx.notes.append(
            f"DEST is on object storage and its config names {dest.out}/...: the trainers read local "
            f"folders, so copy DEST to a disk (e.g. `aws s3 sync {dest.out} /data/export`) and replace "
            f"that prefix in {target.config_file}"
        )
    target.finish(ctx)
    command = target.command(ctx)
    dest.write_bytes(README, target.readme(ctx, command).encode("utf-8"))
    report = _report(build, req, plan, ctx, tallies, command, target)
    dest.write_json(EXPORT_JSON, report)  # last: the marker of a complete export
    timings["finish"] = time.perf_counter() - t
    return ExportSummary(dest.out, report, seconds=time.perf_counter() - start, timings=timings)


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


__all__ = ["ExportError", "ExportRefused", "ExportRequest", "ExportSummary", "run_export"]
