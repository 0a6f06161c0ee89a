"""Checkpoints: ``RUN/checkpoints/step-NNNNNNNN/`` holding

- ``model.safetensors`` (trained weights) and ``ema.safetensors`` (their exponential moving average);
- ``optimizer.pt`` (AdamW state; loaded with ``weights_only=True``, never unpickled freely);
- ``state.json``: step, the full config, the tag vocabulary, the line range, the space, the loader state.

A checkpoint is written into a temporary folder beside its final name, fsynced, then renamed, so
a reader never sees half of one; the oldest are pruned down to ``keep_checkpoints``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sharding.writer import fsync_dir

FORMAT = 1
# Line drawings enter the model inverted: ink 1.0 on a paper 0.0 background (so "no sketch" is zeros).
LINES = {"ink": 1.0, "paper": 0.0, "from_uint8": "1 - v / 255"}
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(ValueError):
    pass


def step_dir(run: str, step: int) -> str:
    return os.path.join(run, "checkpoints", f"step-{step:08d}")


def list_checkpoints(run: str) -> list[tuple[int, str]]:
    folder = os.path.join(run, "checkpoints")
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _STEP_DIR.match(name)
        if m and os.path.isfile(os.path.join(folder, name, "state.json")):
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(run: str) -> str | None:
    found = list_checkpoints(run)
    return found[-1][1] if found else None


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(
    run: str, step: int, *, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
    optimizer: dict[str, Any], state: dict[str, Any], keep: int,
) -> str:  # fmt: skip
    final = step_dir(run, step)
    tmp = os.path.join(os.path.dirname(final), f".tmp-{os.path.basename(final)}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(_contiguous(model), os.path.join(tmp, "model.safetensors"))
    save_file(_contiguous(ema), os.path.join(tmp, "ema.safetensors"))
    torch.save(optimizer, os.path.join(tmp, "optimizer.pt"))
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as fh:
        json.dump({"format": FORMAT, "step": step, "lines": LINES, **state}, fh, indent=1, sort_keys=True)
    for name in os.listdir(tmp):
        with open(os.path.join(tmp, name), "rb") as fh:
            os.fsync(fh.fileno())
    if os.path.exists(final):  # a re-save of the same step (e.g. after a NaN stop): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(os.path.dirname(final))
    for _, old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


@dataclass
class Checkpoint:
    path: str
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def weights(self, which: str = "ema") -> dict[str, torch.Tensor]:
        return load_file(os.path.join(self.path, f"{which}.safetensors"))

    def optimizer(self) -> dict[str, Any]:
        return torch.load(os.path.join(self.path, "optimizer.pt"), map_location="cpu", weights_only=True)


def open_checkpoint(path: str) -> Checkpoint:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    if os.path.isdir(os.path.join(path, "checkpoints")):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"run {path} has no checkpoint yet")
        path = latest
    state_path = os.path.join(path, "state.json")
    if not os.path.isfile(state_path):
        raise CheckpointError(f"{path} is neither a W-net checkpoint (no state.json) nor a run folder")
    with open(state_path, encoding="utf-8") as fh:
        state = json.load(fh)
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}, this version reads {FORMAT}"
        )
    return Checkpoint(path, state)


__all__ = ["LINES", "Checkpoint", "CheckpointError", "latest_checkpoint", "list_checkpoints", "open_checkpoint",
           "save_checkpoint", "step_dir"]  # fmt: skip
