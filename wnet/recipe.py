"""The init recipe: where each UNet tensor of a new W-net comes from, and ``RUN/init.json`` saying so.

``[init]`` names a ``base`` (every UNet tensor unless a longer prefix says otherwise), ``blocks``
(a UNet module prefix -> a model, or a weighted merge ``{path = weight}``), and ``scratch`` (prefixes
left at their fresh, seeded initialisation). The longest matching prefix decides, so each tensor is
assigned exactly once; without a base, a tensor no prefix names starts from scratch.

Strict: a tensor missing from its source, a shape that differs, a prefix that names nothing, or a
source tensor under a taken prefix that the UNet has no place for, each stops the run with one line
naming the key and the file. The record lists, per UNet tensor, the file and key it came from (and
the weights of a merge) and, per file read, its size and sha256.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from groundwork.checkpoints import sha256_cached

from .config import InitConfig, WnetConfigError, merge_sources
from .sources import ModelSource, SourceError, open_source

INIT_FORMAT = 1


def _owner(name: str, prefixes: list[str]) -> str | None:
    """The longest prefix (a dotted module path) that ``name`` lies under."""
    best = None
    for p in prefixes:
        if (name == p or name.startswith(p + ".")) and (best is None or len(p) > len(best)):
            best = p
    return best


def _source(path: str, ema: bool) -> ModelSource:
    return open_source(os.path.abspath(path), ema)


def apply_recipe(init: InitConfig, unet: torch.nn.Module) -> dict[str, Any]:
    """Overwrite the UNet's fresh tensors as the recipe says; return the init.json record."""
    own = unet.state_dict()
    prefixes = [*init.blocks, *init.scratch]
    for p in prefixes:
        if not any(_owner(n, [p]) for n in own):
            raise WnetConfigError(f"init: {p!r} names no UNet tensor (UNet modules: conv_in, time_embedding, "
                                  "down_blocks.N, mid_block, up_blocks.N, conv_norm_out, conv_out, ...)")  # fmt: skip
    base = _source(init.base, init.ema) if init.base else None
    if base is not None:
        extra = sorted(set(base.unet) - set(own))
        if extra:
            ref = base.unet[extra[0]]
            raise SourceError(f"{ref.file}: UNet tensor {ref.key} has no place in the W-net's UNet (as {extra[0]}; "
                              f"{len(extra)} such tensors)")  # fmt: skip
    sources = {p: [(_source(path, init.ema), w) for path, w in merge_sources(v, f"init.blocks.{p!r}")]
               for p, v in init.blocks.items()}  # fmt: skip
    for p, pairs in sources.items():
        for src, _ in pairs:
            extra = sorted(k for k in src.unet if _owner(k, [p]) and k not in own)
            if extra:
                ref = src.unet[extra[0]]
                raise SourceError(
                    f"{ref.file}: UNet tensor {ref.key} (under {p}) has no place in the W-net's UNet"
                )

    record: dict[str, Any] = {}
    files: set[str] = set()
    with torch.no_grad():
        for name, target in own.items():
            p = _owner(name, prefixes)
            if p in init.scratch or (p is None and base is None):
                record[name] = {"scratch": True, **({"prefix": p} if p else {})}
                continue
            pairs = sources[p] if p is not None else [(base, 1.0)]
            total, parts = None, []
            for src, weight in pairs:
                ref = src.unet.get(name)
                if ref is None:
                    raise SourceError(f"UNet tensor {name} is not in {src.path}")
                value = src.tensor(ref)
                if tuple(value.shape) != tuple(target.shape):
                    raise SourceError(f"UNet tensor {name}: {ref.file} has shape {tuple(value.shape)}, "
                                      f"the W-net's UNet {tuple(target.shape)}")  # fmt: skip
                value = value.to(torch.float32) * weight if len(pairs) > 1 else value.to(torch.float32)
                total = value if total is None else total + value
                parts.append(
                    {"file": ref.file, "key": ref.key, **({"weight": weight} if len(pairs) > 1 else {})}
                )
                files.add(ref.file)
            target.copy_(total.to(target.dtype))
            record[name] = {"from": parts, **({"prefix": p} if p else {})}
    return {"unet": record, "files": sorted(files)}


def file_facts(files: list[str]) -> dict[str, dict[str, Any]]:
    """Each file's size and sha256 (hashed once per process and file version)."""
    return {f: {"bytes": os.path.getsize(f), "sha256": sha256_cached(f)} for f in sorted(set(files))}


def init_record(
    init: InitConfig, unet_part: dict[str, Any], other_files: dict[str, list[str]], new: list[str]
) -> dict[str, Any]:
    """The whole of RUN/init.json: the recipe, each UNet tensor's origin, the other parts' files,
    what started fresh, and every file's sha256."""
    files = list(unet_part["files"]) + [f for fs in other_files.values() for f in fs]
    return {
        "format": INIT_FORMAT, "recipe": {"base": init.base, "blocks": init.blocks, "scratch": list(init.scratch),
                                          "ema": init.ema},
        "unet": unet_part["unet"], "parts": other_files, "new": new, "files": file_facts(files),
    }  # fmt: skip


__all__ = ["INIT_FORMAT", "apply_recipe", "file_facts", "init_record"]
