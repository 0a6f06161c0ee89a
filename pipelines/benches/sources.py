"""``bench --only sources``: the enumerate phase of a build over 10-million-post metadata files.

Inputs, generated here once and cached (``$LINEPAIRS_BENCH_CACHE``, default a folder in the temp
dir; the SQLite file takes a few minutes to write): a danbooru2024-style ``metadata.parquet`` and a
SQLite database with the Danbooru API's columns in one table (Jakaline's and Jannchie's layout),
10,000,000 posts each with Zipf-distributed tags in ``tag_string_<category>`` columns; and
KBlueLeaf's layout (post, tag, post<->tag relation) at 1,000,000 posts and ~8 tags each. No image
exists, so every post is a ``missing_file`` record: the figure is the metadata path (read, map,
clean the tags, write the records parts), which is what scales with the dump.

Each measurement runs the REAL ``pipelines.build.enumerate.enumerate_inputs`` (the pre-scan check included)
into a scratch OUT in a fresh child process; its peak RSS (``ru_maxrss``) is the enumeration's own,
with the import baseline reported beside it. Medians over ``--repeats``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

POSTS = 10_000_000
RELATION_POSTS = 1_000_000
CHUNK = 250_000
VOCAB = {"general": (30_000, 18), "character": (80_000, 1), "copyright": (20_000, 1), "artist": (150_000, 1),
         "meta": (500, 2)}  # fmt: skip
CACHE_VERSION = 1


def cache_dir() -> str:
    path = os.environ.get("LINEPAIRS_BENCH_CACHE") or os.path.join(
        tempfile.gettempdir(), "linepairs-bench-sources"
    )
    os.makedirs(path, exist_ok=True)
    return path


def _tags(rng: np.random.Generator, n: int, cat: str) -> pa.Array:
    """``n`` tag strings of one category: a Poisson number of Zipf-distributed tags each."""
    vocab, mean = VOCAB[cat]
    counts = rng.poisson(mean, n).astype(np.int32)
    ids = np.minimum(rng.zipf(1.4, int(counts.sum())) - 1, vocab - 1)
    names = pc.binary_join_element_wise(cat[:4], pc.cast(pa.array(ids), pa.string()), "_")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), names), " ")


def _chunk(start: int, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed + start)
    ids = np.arange(start + 1, start + n + 1)
    cols: dict[str, Any] = {
        "id": pa.array(ids),
        "md5": pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 32, "0"),
        "rating": pa.array(np.array(["g", "s", "q", "e"])[rng.choice(4, n, p=[0.55, 0.3, 0.1, 0.05])]),
        "image_width": pa.array(rng.integers(400, 4000, n)),
        "image_height": pa.array(rng.integers(400, 4000, n)),
        "file_ext": pa.array(np.array(["jpg", "png", "webp"])[rng.choice(3, n, p=[0.7, 0.25, 0.05])]),
        "score": pa.array(rng.integers(-5, 500, n)),
        "fav_count": pa.array(rng.integers(0, 800, n)),
        "is_deleted": pa.array(rng.random(n) < 0.02),
    }
    for cat in VOCAB:
        cols[f"tag_string_{cat}"] = _tags(rng, n, cat)
    return pa.table(cols)


def make_parquet(path: str, n: int = POSTS, seed: int = 0) -> None:
    tmp = path + ".part"
    writer = None
    for start in range(0, n, CHUNK):
        table = _chunk(start, min(CHUNK, n - start), seed)
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=CHUNK)
    writer.close()
    os.replace(tmp, path)


def make_sqlite(path: str, n: int = POSTS, seed: int = 0) -> None:
    tmp = path + ".part"
    if os.path.exists(tmp):
        os.remove(tmp)
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    first = _chunk(0, 1, seed)
    types = {"int64": "INTEGER", "string": "TEXT", "bool": "INTEGER"}
    cols = ", ".join(
        f'"{f.name}" {types[str(f.type)]}' + (" PRIMARY KEY" if f.name == "id" else "") for f in first.schema
    )
    con.execute(f"CREATE TABLE posts ({cols})")
    marks = ", ".join("?" * len(first.schema))
    for start in range(0, n, CHUNK):
        table = _chunk(start, min(CHUNK, n - start), seed)
        con.executemany(
            f"INSERT INTO posts VALUES ({marks})", zip(*(c.to_pylist() for c in table.columns), strict=True)
        )
        con.commit()
    con.close()
    os.replace(tmp, path)


def _kblueleaf(path: str, n: int, seed: int) -> None:
    tmp = path + ".part"
    if os.path.exists(tmp):
        os.remove(tmp)
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    con.executescript(
        'CREATE TABLE "post" ("id" INTEGER NOT NULL PRIMARY KEY, "md5" VARCHAR(255), "file_ext" VARCHAR(255) NOT NULL, '
        '"image_width" INTEGER NOT NULL, "image_height" INTEGER NOT NULL, "rating" INTEGER NOT NULL, '
        '"score" INTEGER NOT NULL, "fav_count" INTEGER NOT NULL, "is_deleted" INTEGER NOT NULL, "is_banned" INTEGER NOT NULL);'
        'CREATE TABLE "tag" ("id" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(255) NOT NULL, "type" INTEGER NOT NULL, '
        '"popularity" INTEGER NOT NULL);'
        'CREATE TABLE "posttagrelation" ("id" INTEGER NOT NULL PRIMARY KEY, "post_id" INTEGER NOT NULL, '
        '"tag_id" INTEGER NOT NULL);'
    )
    tags = 100_000
    con.executemany("INSERT INTO tag VALUES (?, ?, ?, 1)",
                    ((i, f"tag_{i}", int(t)) for i, t in enumerate(rng.integers(0, 5, tags), 1)))  # fmt: skip
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        ids = np.arange(start + 1, start + m + 1)
        con.executemany(
            "INSERT INTO post VALUES (?, NULL, 'jpg', 800, 1000, ?, 5, 3, 0, 0)",
            zip(ids.tolist(), rng.integers(0, 4, m).tolist(), strict=True),
        )
        per = rng.poisson(8, m)
        post = np.repeat(ids, per)
        tag = np.minimum(rng.zipf(1.4, len(post)), tags)
        con.executemany("INSERT INTO posttagrelation (post_id, tag_id) VALUES (?, ?)",
                        zip(post.tolist(), tag.tolist(), strict=True))  # fmt: skip
        con.commit()
    con.execute('CREATE INDEX "posttagrelation_post_id" ON "posttagrelation" ("post_id")')
    con.commit()
    con.close()
    os.replace(tmp, path)


def inputs(n: int = POSTS, relation_posts: int = RELATION_POSTS) -> dict[str, str]:
    """The cached input files (made when absent): name -> SOURCE argument."""
    base = os.path.join(cache_dir(), f"v{CACHE_VERSION}-{n}")
    os.makedirs(base, exist_ok=True)
    out = {}
    parquet = os.path.join(base, "parquet", "metadata.parquet")
    os.makedirs(os.path.dirname(parquet), exist_ok=True)
    if not os.path.exists(parquet):
        make_parquet(parquet, n)
    out["parquet"] = f"hf-tar:{parquet}"
    db = os.path.join(base, "sqlite", "danbooru_metadata.db")
    os.makedirs(os.path.dirname(db), exist_ok=True)
    if not os.path.exists(db):
        make_sqlite(db, n)
    out["sqlite"] = f"sqlite:{db}"
    rel = os.path.join(base, f"kblueleaf-{relation_posts}", "danbooru2023.db")
    os.makedirs(os.path.dirname(rel), exist_ok=True)
    if not os.path.exists(rel):
        _kblueleaf(rel, relation_posts, 0)
    out["sqlite_kblueleaf_relation"] = f"sqlite:{rel}"
    return out


_CHILD = """
import json, resource, sys, time
from curation.sources import parse_source
from pipelines.build.base import Base
from pipelines.build.enumerate import enumerate_inputs
from pipelines.build.request import FRESH, BuildRequest
from pipelines.config import BuildConfig
from sharding.layout import Layout
source, out = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
req = BuildRequest([parse_source(source)], out, BuildConfig(), show_progress=False)
t = time.perf_counter()
layout = Layout(out)
enumerate_inputs(req, layout, Base(FRESH))
seconds = time.perf_counter() - t
inputs = layout.read_json(layout.enumerated)["inputs"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rows": inputs, "peak_rss_mib": peak / 1024, "baseline_rss_mib": before / 1024}))
"""


def measure(source: str) -> dict[str, Any]:
    out = tempfile.mkdtemp(prefix="linepairs-bench-enumerate-")
    try:
        res = subprocess.run([sys.executable, "-c", _CHILD, source, os.path.join(out, "out")],
                             capture_output=True, text=True, check=False)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"sources bench child failed: {res.stderr[-2000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run(args) -> dict[str, Any]:
    repeats = max(1, getattr(args, "repeats", 3))
    posts = getattr(args, "limit", 0) or POSTS  # --limit N: a smaller trial (its own cached inputs)
    relation = min(RELATION_POSTS, posts)
    report: dict[str, Any] = {"posts": posts, "relation_posts": relation, "repeats": repeats,
                              "cache": cache_dir()}  # fmt: skip
    for name, source in inputs(posts, relation).items():
        print(f"bench: sources: {name} ...", file=sys.stderr, flush=True)
        runs = [measure(source) for _ in range(repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        report[name] = {
            "rows": runs[0]["rows"],
            "seconds_median": round(seconds, 1),
            "rows_per_second": round(runs[0]["rows"] / seconds),
            "peak_rss_mib_max": round(max(r["peak_rss_mib"] for r in runs), 1),
            "baseline_rss_mib": round(statistics.median(r["baseline_rss_mib"] for r in runs), 1),
        }
    report["note"] = (
        "the real enumerate phase (pre-scan check, read, map, tag hygiene, records parts) into a scratch OUT; "
        "no image exists, so every post is a missing_file record; peak RSS includes the import baseline"
    )
    return report
