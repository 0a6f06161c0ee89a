"""Writing one shard's samples into DEST: read the tar once, write each exported sample's illustration,
drawing and caption where its target puts them, and return the shard's rows of samples.parquet;
a pool of threads keeps a few shards in flight."""

from __future__ import annotations

import concurrent.futures
import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from groundwork.contract import IMAGE_EXTS, drawing_member
from sharding.captions import caption
from sharding.samplejson import tags_of

from ..progress import Progress
from .dest import Dest
from .drawings import CASES, invert_png
from .plan import LEFT, Plan
from .source import Build, ExportError, stream_samples
from .target import TRAIN, Target

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


@dataclass
class ShardJob:
    build: Build
    dest: Dest
    target: Target
    plan: Plan

    def run(self, shard: str, rows: np.ndarray) -> tuple[pa.Table, dict[str, int]]:
        """Write the files of ``shard``'s exported samples; return its samples.parquet rows and the
        files written with their sizes (the shard's marker lists them)."""
        pop, plan = self.build.pop, self.plan
        keys = pop.keys.take(pa.array(rows)).to_pylist()
        todo = {k: int(r) for k, r in zip(keys, rows) if plan.fate[r] != LEFT}
        done: dict[int, dict[str, Any]] = {}
        written: dict[str, int] = {}
        if todo:
            for key, files in stream_samples(self.build.layout, shard):
                row = todo.pop(key, None)
                if row is not None:
                    done[row] = self.write_sample(shard, key, row, files, written)
            if todo:
                raise ExportError(
                    f"shard {shard}: sample(s) {', '.join(sorted(todo)[:3])} of the manifest are not in it"
                )
        records = [done.get(int(r)) or self.left_out(k, int(r)) for k, r in zip(keys, rows)]
        return pa.Table.from_pylist(records, schema=SAMPLES_SCHEMA), written

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

    def write_sample(
        self, shard: str, key: str, row: int, files: dict[str, bytes], written: dict[str, int]
    ) -> dict[str, Any]:
        plan, target = self.plan, self.target
        name = plan.drawing.names[plan.choice[row]]
        image_ext = next((e for e in IMAGE_EXTS if e in files), None)
        drawing = files.get(drawing_member(name))
        if image_ext is None or drawing is None or "json" not in files:
            raise ExportError(
                f"shard {shard}: sample {key} lacks its illustration, json or {drawing_member(name)}"
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
        caption_file = place.caption if place.caption and (cap.text or target.empty_caption_file) else ""
        outputs = [(place.image, image), (place.conditioning, drawing)]
        for rel, data in outputs + ([(caption_file, cap.text.encode("utf-8"))] if caption_file else []):
            self.dest.write_file(rel, data)
            written[rel] = len(data)
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


def write_shards(
    job: ShardJob, todo: list[str], rows_of: dict[str, np.ndarray], progress: Progress, workers: int
) -> None:
    dest = job.dest

    def one(shard: str) -> int:
        part, written = job.run(shard, rows_of[shard])
        dest.write_parquet(dest.part(shard), part)
        # last: the shard is done; its files and sizes let a re-run check them (run.finished)
        dest.write_json(dest.marker(shard), {"shard": shard, "samples": part.num_rows, "files": written})
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


__all__ = ["SAMPLES_SCHEMA", "ShardJob", "write_shards"]
