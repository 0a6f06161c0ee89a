"""The W-net tests' demo build (``pipelines.demo.tiny_demo_build``, shared with the bench) and configs."""

from __future__ import annotations

import os

from pipelines.demo import tiny_demo_build as demo_build


def tiny_toml(path: str, **train) -> str:
    """A TOML config: the tiny preset with fast test settings and ``train`` overrides."""
    values = {
        "batch_size": 8,
        "log_every": 1,
        "checkpoint_every": 4,
        "sample_every": 0,
        "eval_every": 0,
        **train,
    }
    lines = ['preset = "tiny"', 'name = "tiny-test"', "[train]"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v!r}" for k, v in values.items()]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def shared_demo_build(corpus: str, tmp_path_factory) -> str:
    """The demo build, made once per test session (a re-run returns at once); do not modify it."""
    root = str(tmp_path_factory.getbasetemp() / "wnet-demo")
    os.makedirs(root, exist_ok=True)
    return demo_build(corpus, root)
