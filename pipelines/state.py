"""Where a build keeps its progress inside OUT, and the atomic file helpers around it.

Every phase writes its outputs atomically and leaves a marker only once they are complete, so a
build killed at any moment resumes from the last finished unit (records chunk, scan chunk, shard).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sharding.writer import atomic_write_bytes


def write_json(path: str, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_parquet(path: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


@dataclass(frozen=True)
class Layout:
    """Paths inside OUT; the public ones are in the output contract (docs/output.md)."""

    out: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    # public
    @property
    def build_json(self) -> str:
        return self.path("build.json")

    @property
    def scan_dir(self) -> str:
        return self.path("scan")

    def scan_part(self, chunk: int) -> str:
        return self.path("scan", f"part-{chunk:06d}.parquet")

    @property
    def plan(self) -> str:
        return self.path("plan.parquet")

    @property
    def manifest(self) -> str:
        return self.path("manifest.parquet")

    @property
    def rejects(self) -> str:
        return self.path("rejects.parquet")

    @property
    def shards_json(self) -> str:
        return self.path("shards.json")

    # private progress
    @property
    def request(self) -> str:
        return self.path("_state", "request.json")

    def records_part(self, chunk: int) -> str:
        return self.path("_state", "records", f"part-{chunk:06d}.parquet")

    @property
    def enumerated(self) -> str:
        return self.path("_state", "enumerated.json")

    def shard_state(self, shard: str) -> str:
        return self.path("_state", "shards", shard.replace("/", "__") + ".json")
