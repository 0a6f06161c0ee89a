"""What every export target shares: where a sample's files go, what its config needs, the registry.

A target is a small class (one module each: diffusers.py, kohya.py, simpletuner.py, aitoolkit.py)
that names files and writes its trainer's config; reading the build, choosing drawings, solving
repeats, writing and resuming are the driver's (plan.py, shards.py, run.py).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .dest import Dest

TRAIN, VALIDATION = "train", "validation"
MODULES = {
    "diffusers": "pipelines.export.diffusers",
    "kohya": "pipelines.export.kohya",
    "simpletuner": "pipelines.export.simpletuner",
    "ai-toolkit": "pipelines.export.aitoolkit",
}


@dataclass(frozen=True)
class Placement:
    """A sample's files, relative to DEST; ``caption`` None: no caption file (in a table, or empty
    where the trainer wants no file)."""

    image: str
    conditioning: str
    caption: str | None


@dataclass
class Group:
    """One folder of samples that share a repeat count (and keep_tokens where the trainer takes it
    per folder): a kohya subset, an ai-toolkit dataset, a SimpleTuner dataset pair."""

    name: str
    repeats: int
    keep_tokens: int
    samples: int = 0


@dataclass
class Context:
    """What a target's config and README are made from, once every sample is in DEST."""

    dest: Dest
    groups: list[Group]  # train groups, sorted by name
    resolution: int  # the training resolution (px, side of a square area)
    buckets: list[tuple[int, int]]  # the build's buckets that hold exported samples
    bucket_step: int
    train: int  # training samples
    validation: int
    draws: int  # training draws per epoch (sum of repeats)
    polarity: str
    parts: Any = None  # () -> iterator of samples tables (pyarrow), shard by shard, for draw lists
    notes: list[str] = field(default_factory=list)  # extra README lines (warnings)
    validation_pairs: list[tuple[str, str]] = field(default_factory=list)  # (drawing, caption) held out
    facts: dict[str, Any] = field(default_factory=dict)  # what finish() learnt (recorded in export.json)

    def dest_path(self, rel: str) -> str:
        """A folder inside DEST as the trainer's config should name it: absolute for a local DEST,
        the URL otherwise (download DEST first for trainers that read only local folders)."""
        return self.dest.display(rel)

    def iter_parts(self) -> Iterator[pa.Table]:
        return self.parts()


class Target:
    name = ""
    invert = True  # default polarity: white lines on black
    polarity_reason = ""
    resolution = 512  # default training resolution
    levels_limited = True  # one folder per repeat count (False: counts become rows)
    keep_groups = False  # folders also split by keep_tokens (trainers that take it per folder)
    empty_caption_file = False  # a sample without tags gets an empty caption file
    config_file = ""  # the trainer's config written into DEST
    control_dir = "conditioning"  # the drawings' folder beside images/ (the grouped layout of place())

    def image_ext(self, build_ext: str) -> str:
        """The extension the illustration is written with (the shard's unless the trainer needs another)."""
        return build_ext

    def group(self, repeats: int, keep_tokens: int) -> str:
        return f"r{repeats:04d}" + (f"-k{keep_tokens}" if self.keep_groups else "")

    def place(self, key: str, split: str, group: str, image_ext: str) -> Placement:
        """The grouped layout kohya, SimpleTuner and ai-toolkit read: ``images/GROUP/KEY.EXT`` with
        its caption ``KEY.txt`` beside it and the drawing ``CONTROL/GROUP/KEY.png`` (``control_dir``);
        held-out samples in ``validation/images`` and ``validation/CONTROL``, outside every group."""
        folder = f"images/{group}" if split == TRAIN else "validation/images"
        cond = f"{self.control_dir}/{group}" if split == TRAIN else f"validation/{self.control_dir}"
        return Placement(f"{folder}/{key}.{image_ext}", f"{cond}/{key}.png", f"{folder}/{key}.txt")

    def finish(self, ctx: Context) -> None:
        """Write the trainer's config into DEST."""
        raise NotImplementedError

    def readme(self, ctx: Context, command: str) -> str:
        """DEST/README.md."""
        return readme_text(self.name, command, ctx)

    def command(self, ctx: Context) -> str:
        """The exact command line that trains on DEST."""
        raise NotImplementedError


def get(name: str) -> Target:
    return importlib.import_module(MODULES[name]).TARGET


def readme_text(name: str, command: str, ctx: Context, extra: str = "") -> str:
    notes = "".join(f"- {n}\n" for n in ctx.notes)
    return (
        f"# linepairs export for {name}\n\n"
        f"{ctx.train} training samples ({ctx.draws} draws per epoch: the weights as repeats), "
        f"{ctx.validation} held out; drawings {ctx.polarity.replace('_', ' ')}.\n"
        "`export.json` has the realised share of draws per source, tier and bucket next to the intended\n"
        "one; `samples.parquet` lists every sample of the build with its drawing, repeats and files.\n\n"
        f"{extra}## Train\n\n```sh\n{command}\n```\n" + (f"\n## Notes\n\n{notes}" if notes else "")
    )


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(value, ensure_ascii=False)


__all__ = ["MODULES", "TRAIN", "VALIDATION", "Context", "Group", "Placement", "Target", "get", "readme_text",
           "toml_string"]  # fmt: skip
