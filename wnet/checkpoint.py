"""Checkpoints: ``RUN/checkpoints/step-NNNNNNNN/`` holding

- ``model.safetensors`` (trained weights) and ``ema.safetensors`` (their exponential moving average);
- ``optimizer.pt`` (AdamW state; loaded with ``weights_only=True``, never unpickled freely);
- ``state.json``: step, the full config, the tag vocabulary, the parts (UNet config, conditioning, VAE),
  the line range, the space, the loader state.

Only what trains is saved: a frozen text encoder lives once in ``RUN/components/`` (so a checkpoint
with the checkpoint's text encoder is read inside its run).

A checkpoint is written into a temporary folder beside its final name, fsynced, then renamed, so
a reader never sees half of one; the oldest are pruned down to ``keep_checkpoints``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from groundwork.files import fsync_dir

FORMAT = 2  # 2: diffusers UNet, state.json records the parts (1: the hand-written UNet)
# Line drawings enter the model inverted: ink 1.0 on a paper 0.0 background (so "no sketch" is zeros).
LINES = {"ink": 1.0, "paper": 0.0, "from_uint8": "1 - v / 255"}
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(ValueError):
    pass


def step_dir(run: str, step: int) -> str:
    return os.path.join(run, "checkpoints", f"step-{step:08d}")


def list_checkpoints(run: str) -> list[tuple[int, str]]:
    """Every ``step-NNNNNNNN`` folder, usable or not (``usable_checkpoint`` tells which can be read)."""
    folder = os.path.join(run, "checkpoints")
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        m = _STEP_DIR.match(name)
        if m and os.path.isdir(os.path.join(folder, name)):
            found.append((int(m.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(run: str) -> str | None:
    """The newest checkpoint folder whose state.json reads (see ``usable_checkpoint`` for the weights)."""
    for _, path in reversed(list_checkpoints(run)):
        try:
            _read_state(path)
            return path
        except CheckpointError:
            continue
    return None


def run_of(checkpoint: str) -> str | None:
    """The run a checkpoint folder lies in (RUN/checkpoints/step-N), or None for a folder elsewhere."""
    parent = os.path.dirname(os.path.abspath(checkpoint))
    run = os.path.dirname(parent)
    return (
        run
        if os.path.basename(parent) == "checkpoints" and os.path.isfile(os.path.join(run, "run.json"))
        else None
    )


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
        path = os.path.join(self.path, f"{which}.safetensors")
        try:
            return load_file(path)
        except Exception as exc:  # noqa: BLE001 - safetensors (SafetensorError, OSError) and torch on a cut or foreign file: one CheckpointError
            raise CheckpointError(f"{path}: unreadable weights ({_one_line(exc)})") from None

    def optimizer(self) -> dict[str, Any]:
        path = os.path.join(self.path, "optimizer.pt")
        try:
            with warnings.catch_warnings():  # a foreign pickle also triggers a protocol warning
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the restricted unpickler raises many types; all mean a bad file
            # (PyTorch's own message suggests weights_only=False: never, for a file that failed this)
            raise CheckpointError(f"{path}: not a readable optimizer state ({type(exc).__name__})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def _read_state(path: str) -> dict[str, Any]:
    state_path = os.path.join(path, "state.json")
    if not os.path.isfile(state_path):
        raise CheckpointError(f"{path} is neither a W-net checkpoint (no state.json) nor a run folder")
    try:
        with open(state_path, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{state_path}: unreadable ({_one_line(exc)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{state_path}: not a checkpoint state (no integer step)")
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {state.get('format')!r}, this version reads {FORMAT}"
        )
    return state


def open_checkpoint(path: str) -> Checkpoint:
    """A checkpoint folder, or a run folder (its newest checkpoint whose state.json reads)."""
    if os.path.isdir(os.path.join(path, "checkpoints")):
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"run {path} has no readable checkpoint yet")
        path = latest
    return Checkpoint(path, _read_state(path))


@dataclass
class Resumed:
    """A checkpoint read in full: its state and every tensor, ready to load into a trainer."""

    checkpoint: Checkpoint
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def usable_checkpoint(run: str) -> tuple[Resumed | None, list[str]]:
    """The newest checkpoint of ``run`` that reads in full, and one line per newer one that did not.

    A cut ``model.safetensors``, a garbage ``optimizer.pt``, a torn or missing ``state.json``:
    each is named and the previous checkpoint is tried. None (no checkpoint at all) starts from
    step 0; checkpoints that all fail raise CheckpointError rather than silently start over.
    """
    skipped = []
    found = list_checkpoints(run)
    for _, path in reversed(found):
        try:
            ckpt = Checkpoint(path, _read_state(path))
            return Resumed(ckpt, ckpt.weights("model"), ckpt.weights("ema"), ckpt.optimizer()), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    if found:
        raise CheckpointError(
            f"none of the {len(found)} checkpoint(s) of {run} is readable: {'; '.join(skipped[:3])}"
        )
    return None, skipped


__all__ = ["LINES", "Checkpoint", "CheckpointError", "Resumed", "latest_checkpoint", "list_checkpoints",
           "open_checkpoint", "run_of", "save_checkpoint", "step_dir", "usable_checkpoint"]  # fmt: skip
