"""A finished linepairs OUT read back as a source (a dataset built from older builds).

The manifest is the metadata (tags by category, post id, rating with its era, score, fav_count,
caption); each row's image is the ``KEY.jpg`` (or ``.webp``) member of its shard. The line drawings
(``KEY.lineart.NAME.png``) and ``KEY.json`` / ``KEY.txt`` are not images of posts: the drawings are
counted and reported once, the JSON and caption are the manifest's facts again.

Keys: a record's ``source`` is this source's name and its ``source_id`` the sample's key in the
older build (``danbooru_123``), so the new key is ``NAME_danbooru_123``: two older builds that both
have a ``danbooru`` source stay apart by the names given to them (``a=linepairs:OUT1
b=linepairs:OUT2`` -> ``a_danbooru_123``, ``b_danbooru_123``), the older source name stays readable
in every key and ``source_id``, and the post id stays the sample's ``id``. The same post in both
builds is an ordinary duplicate: the plan's dedup keeps one.

``build.json`` and the manifest get the metadata-file policy (``common.metadata_refusal``): either
one linking out of OUT or not a regular file is never opened; it is one reject row, and the shards'
samples, which then have no metadata, are ``no_metadata`` rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from groundwork.contract import BUILD_JSON, MANIFEST, SHARDS_DIR

from ..records import Record
from ..storage import SourceStorage, is_remote, join
from .archives import archives_below, collect
from .common import MetadataRefused, check_metadata_file, is_dir, is_file, read_small
from .dump import DEFAULT_OPTIONS, Notes, ReadOptions, iter_joined
from .mapping import Mapping, resolve
from .tables import ParquetTable


class NotABuild(ValueError):
    """A folder that looks like a linepairs OUT but is not a finished one."""


def _present(path: str, storage: SourceStorage | None) -> bool:
    """A file there; locally any entry but a folder (a link or FIFO is refused when read, not unseen)."""
    if is_remote(path):
        return is_file(path, storage)
    return os.path.lexists(path) and not os.path.isdir(path)


def looks_like_linepairs(path: str, storage: SourceStorage | None = None) -> bool:
    return (
        is_dir(path, storage)
        and _present(join(path, BUILD_JSON), storage)
        and _present(join(path, MANIFEST), storage)
    )


def open_manifest(path: str, storage: SourceStorage | None = None) -> tuple[ParquetTable, Mapping]:
    """The manifest and its mapping; MetadataRefused when build.json or the manifest may not be opened."""
    check_metadata_file(join(path, BUILD_JSON), path, storage)
    try:
        build = json.loads(read_small(join(path, BUILD_JSON), 64 << 20, storage))
    except (OSError, ValueError) as exc:
        raise NotABuild(f"{path}/{BUILD_JSON} is unreadable: {exc}") from None
    if not isinstance(build, dict) or not build.get("complete"):
        raise NotABuild(
            f"{path} is an unfinished linepairs build: finish it (run its build again) before reading it"
        )
    table = ParquetTable(join(path, MANIFEST), storage, where=MANIFEST, root=path)
    return table, resolve("linepairs", table.columns(), MANIFEST)


def shard_files(path: str, storage: SourceStorage | None = None) -> list[str]:
    return archives_below(join(path, SHARDS_DIR), storage)


def iter_linepairs(
    source: str,
    path: str,
    storage: SourceStorage | None = None,
    options: ReadOptions = DEFAULT_OPTIONS,
    notes: Notes | None = None,
) -> Iterator[Record]:
    try:
        table, mapping = open_manifest(path, storage)
    except MetadataRefused as exc:
        yield exc.record(source, exc.path.rpartition("/")[2])
        parts = []
    else:
        rows = (
            (f"{table.where}:{pos}", row)
            for pos, row in enumerate(table.rows([c for c, _, _ in mapping.mapped]))
        )
        parts = [(mapping, rows)]
    samples = collect(source, shard_files(path, storage), path, storage, by="key", sidecars=("json", "txt"))
    for sample in samples.by_key.values():
        sample.sidecars = {}  # the manifest says what the JSON says
    yield from iter_joined(
        source, parts, samples, era=None, root=path, options=options, storage=storage, by="key",
        unrated_ok=True, notes=notes,
    )  # fmt: skip


__all__ = ["NotABuild", "iter_linepairs", "looks_like_linepairs", "open_manifest", "shard_files"]
