"""Checkpoint files of the learned extractors and scorers: find, verify, load (never a full unpickle).

Resolution order for a network's file (``WeightsSpec.filename``):

1. an explicit path (``lineart.create(name, weights=PATH)``);
2. the cache directory: ``$LINEPAIRS_WEIGHTS`` if set, else ``~/.cache/linepairs``; the file is
   looked for in it and in its direct subfolders (checkpoints are often kept one folder per network).
   A cached file of a spec that pins a sha256 is re-hashed before use: a damaged one is downloaded
   again (or is an error naming it when offline);
3. the pinned URL, downloaded into the cache and checked against the pinned sha256. Only when the
   spec pins a sha256, and never when ``$LINEPAIRS_OFFLINE`` is set. The download is capped at
   ``MAX_DOWNLOAD_BYTES`` and ``DOWNLOAD_DEADLINE_S`` in all. A failed download is an error
   naming the file, the URL and the folder to put it in.

Loading uses ``torch.load(weights_only=True)`` (a restricted unpickler that only rebuilds tensors
and containers) or safetensors. Wrappers are unwrapped: ``{"state_dict": ...}`` and the
``module.`` prefix that DataParallel adds.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .files import sha256_file


class WeightsError(ValueError):
    """A checkpoint that is missing, unreadable or of the wrong architecture."""


@dataclass(frozen=True)
class WeightsSpec:
    """The public checkpoint a network loads by default."""

    filename: str
    url: str | None = None
    sha256: str | None = None  # None: no pinned hash, so no automatic download


MAX_DOWNLOAD_BYTES = 2 << 30  # the largest public line-art checkpoint is ~700 MB
DOWNLOAD_DEADLINE_S = 900.0  # for the whole download, not per read (a trickling server cannot stall a build)


def cache_dir() -> str:
    return os.environ.get("LINEPAIRS_WEIGHTS") or os.path.join(os.path.expanduser("~"), ".cache", "linepairs")


def find_cached(folder: str, filename: str) -> str | None:
    """``folder/filename``, else ``folder/*/filename`` (first in sorted order)."""
    direct = os.path.join(folder, filename)
    if os.path.isfile(direct):
        return direct
    if not os.path.isdir(folder):
        return None
    for sub in sorted(os.listdir(folder)):
        path = os.path.join(folder, sub, filename)
        if not sub.startswith(".") and os.path.isfile(path):
            return path
    return None


_HASHED: dict[tuple[str, int, int], str] = {}


def sha256_cached(path: str) -> str:
    """sha256 of a file, remembered per (path, size, mtime) within this process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key]


def resolve(spec: WeightsSpec, weights: str | os.PathLike | None = None) -> str:
    """Path of the checkpoint file to load; see the module doc for the order."""
    if weights is not None:
        path = os.path.expanduser(os.fspath(weights))
        if os.path.isdir(path):  # a folder holding the public file name, like controlnet_aux's local dirs
            path = os.path.join(path, spec.filename)
        if not os.path.isfile(path):
            raise WeightsError(f"weights file not found: {path}")
        return path
    folder = cache_dir()
    where = f"put {spec.filename} in {folder} (or set $LINEPAIRS_WEIGHTS, or pass weights=PATH)"
    found = find_cached(folder, spec.filename)
    damaged = None
    if found is not None:
        if spec.sha256 is None or sha256_cached(found) == spec.sha256:
            return found
        damaged = f"cached {found} has sha256 {sha256_cached(found)}, expected {spec.sha256}"
    cached = os.path.join(folder, spec.filename) if damaged is None else found
    if damaged and (spec.url is None or os.environ.get("LINEPAIRS_OFFLINE")):
        raise WeightsError(f"{damaged}: damaged or a different file; replace it ({where})")
    if spec.url is None:
        raise WeightsError(f"no weights for {spec.filename}: {where}")
    if spec.sha256 is None:
        raise WeightsError(
            f"{spec.filename} has no pinned sha256, so it is not downloaded automatically: "
            f"fetch {spec.url} yourself and {where}"
        )
    if os.environ.get("LINEPAIRS_OFFLINE"):
        raise WeightsError(
            f"{spec.filename} is not cached and $LINEPAIRS_OFFLINE is set: fetch {spec.url} and {where}"
        )
    return _download(spec, cached, where)


def _download(spec: WeightsSpec, dest: str, where: str) -> str:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=spec.filename + ".", suffix=".part", dir=os.path.dirname(dest))
    try:
        started = time.monotonic()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=30) as resp:  # noqa: S310
            size = int(resp.headers.get("Content-Length") or 0)
            if size > MAX_DOWNLOAD_BYTES:
                raise WeightsError(f"{spec.url} offers {size} bytes, more than the {MAX_DOWNLOAD_BYTES} cap")
            total = 0
            while block := resp.read1(1 << 20):  # what has arrived: the deadline is checked often
                total += len(block)
                if total > MAX_DOWNLOAD_BYTES:
                    raise WeightsError(
                        f"{spec.url} sent more than the {MAX_DOWNLOAD_BYTES}-byte cap: stopped"
                    )
                if time.monotonic() - started > DOWNLOAD_DEADLINE_S:
                    raise WeightsError(
                        f"downloading {spec.filename} took over {DOWNLOAD_DEADLINE_S:g} s: stopped; {where}"
                    )
                out.write(block)
        got = sha256_file(tmp)
        if got != spec.sha256:
            raise WeightsError(
                f"downloaded {spec.filename} has sha256 {got}, expected {spec.sha256}: not used"
            )
        os.replace(tmp, dest)
        return dest
    except OSError as exc:  # URLError, timeouts, DNS: all OSError
        raise WeightsError(f"could not download {spec.filename} from {spec.url} ({exc}); {where}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped; a clear ``WeightsError`` for anything else."""
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        _check_container(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - the restricted unpickler raises many types (UnpicklingError, RuntimeError, EOFError...); all mean a bad file
            raise WeightsError(f"{path}: not a loadable torch checkpoint ({load_failure(exc)})") from None
    return unwrap(obj, path)


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line, without PyTorch's advice
    to retry with ``weights_only=False`` (never, for a file that failed this: it runs its code)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        found = next((line for line in lines[1:] if "GLOBAL" in line or "Unsupported" in line), None)
        return (
            f"refused by the restricted unpickler, it holds more than tensors: {found}"[:300]
            if found
            else "refused by the restricted unpickler: it holds more than tensors"
        )
    return (lines[0] if lines else type(exc).__name__)[:300]


def _check_container(path: str) -> None:
    """Cheap sanity check before torch.load, so a truncated zip gets a precise message."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise WeightsError(f"{path}: empty file")
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise WeightsError(f"{path}: truncated or corrupt checkpoint (zip directory missing)")


def unwrap(obj: object, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``{"state_dict": sd}`` -> sd; strip the DataParallel ``module.`` prefix."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key[7:] if key.startswith("module.") else key] = value
    return out


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strict load with an error that names missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", mis_shaped),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(f"{what} does not fit this network; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
