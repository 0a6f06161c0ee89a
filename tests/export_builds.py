"""A two-source build of the shared illustrations for the export tests, made once per session.

The corpus is split into two folder sources of unequal size, most images with a kohya-style tag
sidecar (a few without: empty captions), built with a ``[weights.shares]`` policy that gives the
smaller source the larger share, the default bucket rule and extractors (canny, xdog), and pair
quality on (so some drawings are dropped, as in a real build).
"""

from __future__ import annotations

import os
import shutil

from curation.sources import parse_source
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from pipelines.config import load_config

SHARES = {"big": 0.35, "small": 0.65}
TAGS = ["1girl, solo, long_hair, smile", "2girls, outdoors, ^_^, school_uniform", "1boy, solo, short_hair",
        "1girl, flower, dress, looking_at_viewer, blue_hair"]  # fmt: skip
CONFIG = """
[shards]
samples_per_shard = 6
[weights.shares]
big = 0.35
small = 0.65
"""

_MADE: dict[str, str] = {}


def corpus_two_sources(corpus: str, tmp_path_factory) -> str:
    """OUT of the two-source corpus build (needs the ray_cluster fixture); do not modify it."""
    if "out" in _MADE:
        return _MADE["out"]
    root = tmp_path_factory.getbasetemp() / "export-corpus"
    names = sorted(os.listdir(corpus))
    split = len(names) * 2 // 3  # unequal sources
    for folder, chosen in (("big", names[:split]), ("small", names[split:])):
        os.makedirs(root / folder, exist_ok=True)
        for i, name in enumerate(chosen):
            shutil.copy(os.path.join(corpus, name), root / folder / name)
            if i % 4 != 3:  # every fourth image has no tags: an empty caption
                stem = os.path.splitext(name)[0]
                (root / folder / f"{stem}.txt").write_text(TAGS[i % len(TAGS)] + "\n")
    (root / "build.toml").write_text(CONFIG)
    out = str(root / "out")
    sources = [parse_source(f"big={root / 'big'}"), parse_source(f"small={root / 'small'}")]
    run_build(BuildRequest(sources, out, load_config(str(root / "build.toml")), show_progress=False))
    _MADE["out"] = out
    return out
