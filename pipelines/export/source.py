"""The build an export reads: manifest + weight version as arrays (``sharding.loader``'s Population,
one Arrow key column and integer codes, so a million samples stay small), and its shards streamed,
each read once, front to back (one sequential read per tar, also on an object store)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sharding.layout import Layout, StorageError
from sharding.loader import LoaderError, Population, load_population, shard_problems
from sharding.shardfile import sample_infos


class ExportError(ValueError):
    """The build cannot be exported as asked; the message says what and where (one line)."""


@dataclass
class Build:
    layout: Layout
    info: dict[str, Any]  # build.json
    pop: Population  # manifest rows with the weight version's weights and tiers
    fingerprint: str  # sha256 of shards.json: names the build's content
    weights_sha256: str  # of the weight version's file
    shards: list[dict[str, Any]]  # shards.json entries

    @property
    def config(self) -> dict[str, Any]:
        return self.info["request"]["config"]

    @property
    def extractors(self) -> list[str]:
        """The build's extractors in build order."""
        return [e["name"] for e in self.config["extractors"]]

    @property
    def bucket_step(self) -> int:
        return int(self.config["buckets"]["step"])

    def rows_by_shard(self) -> dict[str, np.ndarray]:
        """Shard path -> its population rows, in manifest order."""
        codes = self.pop.shards
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(self.pop.shard_names) + 1))
        return {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(self.pop.shard_names)}


def open_build(out: str, storage_options: Mapping[str, Any] | None, weights: str | None) -> Build:
    """A finished build with weight version ``weights`` (None: the active one); ExportError otherwise."""
    try:
        layout = Layout(out, storage_options)
    except StorageError as exc:
        raise ExportError(str(exc)) from None
    info = layout.read_json(layout.build_json) if layout.exists(layout.build_json) else {}
    if not info.get("complete"):
        raise ExportError(f"{layout.out} is not a finished build (no complete build.json)")
    try:
        shards_raw = layout.read_bytes(layout.shards_json)
    except OSError as exc:
        raise ExportError(f"{layout.out}: no readable shards.json ({exc})") from None
    shards = json.loads(shards_raw)["shards"]
    problems = shard_problems(layout, shards)  # missing or truncated: refused, never a silent gap
    if problems:
        listed = "; ".join(f"{p}: {why}" for p, why in sorted(problems.items())[:5])
        raise ExportError(
            f"{len(problems)} bad shard(s) in {layout.out}: {listed} (`linepairs verify` says more)"
        )
    try:
        pop, _ = load_population(layout, weights=weights)
    except LoaderError as exc:
        raise ExportError(str(exc)) from None
    version = layout.weights_version(pop.weights_name)
    return Build(
        layout=layout,
        info=info,
        pop=pop,
        fingerprint=hashlib.sha256(shards_raw).hexdigest(),
        weights_sha256=layout.sha256(version),
        shards=shards,
    )


def stream_samples(layout: Layout, shard: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of ``shard``, read once as a stream: a sample's
    members are adjacent in the tar, so only one sample is in memory."""
    key, files = None, {}
    try:
        with (
            layout.fs.open_input_stream(layout.shard(shard)) as raw,
            tarfile.open(fileobj=raw, mode="r|") as tar,
        ):
            for info, name, ext in sample_infos(tar):
                if name != key:
                    if key is not None:
                        yield key, files
                    key, files = name, {}
                files[ext] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ExportError(f"shard {shard}: unreadable ({exc}); `linepairs verify` says more") from None
    if key is not None:
        yield key, files


__all__ = ["Build", "ExportError", "open_build", "stream_samples"]
