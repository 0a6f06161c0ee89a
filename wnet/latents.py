"""The latent cache (``linepairs train --cache-latents``): each shard's illustrations encoded once by the VAE.

A latent space spends most of a step's data work in the VAE's encoder. The cache encodes every
illustration of a shard at its training size, and its mirror image (``train.flip`` draws either),
into ``CACHE/<vae>/<W>x<H>/<shard sha256>.safetensors`` (the posterior mean times the scaling factor,
as ``LatentSpace.encode``). Files are named by the shard's sha256 in the build's ``shards.json`` and
by a digest of the VAE's weights, so runs on the same build and VAE share them (the default CACHE is
``latents/`` beside the run), and a rebuilt shard or another VAE never reads a stale file. Filling
reads each shard's tar once and checks it against its recorded sha256 first; each file is written
to a temporary name and renamed, so a kill leaves no half file.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from groundwork.files import atomic_path
from sharding.layout import Layout
from sharding.shardfile import sample_members

from .data import decode_at, train_size
from .space import LatentSpace, images_to_tensor

CACHE_FORMAT = "1"
ENCODE_BATCH = 8
IMAGE_MEMBERS = ("jpg", "jpeg", "webp", "png")  # a sample's picture member (one per sample)


class LatentCacheError(ValueError):
    pass


def vae_digest(vae_folder: str) -> str:
    """16 hex digits identifying a VAE by its config and weights."""
    from groundwork.checkpoints import sha256_cached

    from .sources import weight_files

    h = hashlib.sha256()
    with open(os.path.join(vae_folder, "config.json"), "rb") as fh:
        h.update(fh.read())
    for f in weight_files(vae_folder):
        h.update(sha256_cached(f).encode())
    return h.hexdigest()[:16]


class LatentCache:
    """Reads (and fills) the cache of one build for one VAE at the run's training sizes."""

    def __init__(self, root: str, build: str | Layout, vae_folder: str, max_side: int, multiple: int):
        self.layout = build if isinstance(build, Layout) else Layout(build)
        self.root = os.path.join(root, vae_digest(vae_folder))
        self.vae_folder, self.max_side, self.multiple = vae_folder, max_side, multiple
        shards = json.loads(self.layout.read_bytes(self.layout.shards_json))["shards"]
        self.sha = {s["path"]: s["sha256"] for s in shards}
        table = self.layout.read_parquet(self.layout.manifest, columns=["shard", "bucket_w", "bucket_h"])
        self.bucket = {
            s: (w, h) for s, w, h in zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
        }

    def path(self, shard: str, size: tuple[int, int]) -> str:
        return os.path.join(self.root, f"{size[0]}x{size[1]}", f"{self.sha[shard]}.safetensors")

    def _usable(self, path: str, shard: str) -> bool:
        try:
            with safe_open(path, "pt") as fh:
                meta = fh.metadata() or {}
        except Exception:  # noqa: BLE001 - a cut or foreign cache file (any safetensors error): made again, never trusted
            return False
        return meta.get("sha256") == self.sha[shard] and meta.get("format") == CACHE_FORMAT

    def fill(
        self, space: LatentSpace, buckets: list[tuple[int, int]] | None = None, progress=None
    ) -> dict[str, int]:
        """Encode every shard (of ``buckets``) whose file is missing or stale; returns counts."""
        made = reused = 0
        for shard, bucket in sorted(self.bucket.items()):
            if buckets and bucket not in buckets:
                continue
            size = train_size(bucket, self.max_side, self.multiple)
            path = self.path(shard, size)
            if os.path.isfile(path) and self._usable(path, shard):
                reused += 1
            else:
                self._encode_shard(space, shard, bucket, size, path)
                made += 1
            if progress is not None:
                progress(shard)
        return {"made": made, "reused": reused}

    def _encode_shard(self, space: LatentSpace, shard: str, bucket, size, path: str) -> None:
        data = self.layout.read_bytes(self.layout.shard(shard))
        if hashlib.sha256(data).hexdigest() != self.sha[shard]:
            raise LatentCacheError(
                f"shard {shard} does not match its sha256 in shards.json; run linepairs verify"
            )
        members = sample_members(data, IMAGE_MEMBERS)
        images = {key: next(iter(found.values())) for key, found in members.items()}
        keys = sorted(images)
        out: dict[str, torch.Tensor] = {}
        for start in range(0, len(keys), ENCODE_BATCH):
            part = keys[start : start + ENCODE_BATCH]
            pixels = np.stack([decode_at(images[k], bucket, size, True) for k in part])
            both = np.concatenate([pixels, pixels[:, :, ::-1]])  # the pictures, then their mirror images
            z = space.encode(images_to_tensor(both, next(space.vae.parameters()).device)).float().cpu()
            for i, k in enumerate(part):
                out[k] = torch.stack([z[i], z[len(part) + i]]).contiguous()
        with atomic_path(path) as tmp:
            save_file(out, tmp, metadata={"sha256": self.sha[shard], "shard": shard, "format": CACHE_FORMAT,
                                          "size": f"{size[0]}x{size[1]}"})  # fmt: skip

    def get(self, shards: list[str], keys: list[str], size: tuple[int, int]) -> np.ndarray:
        """N x 2 x C x h x w float32: each sample's latent and its mirror image's."""
        out = []
        for shard, key in zip(shards, keys, strict=True):
            path = self.path(shard, size)
            try:
                with safe_open(path, "np") as fh:
                    out.append(fh.get_tensor(key))
            except Exception as exc:  # noqa: BLE001 - safetensors on a cut or foreign cache file: one LatentCacheError line
                raise LatentCacheError(f"latent cache {path}: no latent for {key} ({type(exc).__name__}); "
                                       "run with --cache-latents again to fill it") from None  # fmt: skip
        return np.stack(out)


def default_root(run: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(run)), "latents")


__all__ = ["LatentCache", "LatentCacheError", "default_root", "vae_digest"]
