"""What every learned extractor shares: weights, device, batching, precision, sizes, uint8 out.

A network module supplies a ``NetSpec`` (how to build the module from a state dict, how to turn
uint8 RGB into its input, and its raw output into uint8 ink-on-paper) and registers it with
``register_net``. ``NetExtractor`` does the rest:

* inputs are one ``N x H x W x 3`` uint8 array, so one size per batch (the build groups images by
  bucket); a list of differently sized images is refused with a message that says so;
* ``detect_resolution`` (default None: the input's own size) resizes like controlnet_aux's
  ``resize_image`` (short side to that value, both sides rounded to multiples of 64, area when
  shrinking, Lanczos when enlarging), runs, and resizes the drawing back (linear);
* sizes the network cannot take are padded (edge or reflect) to its multiple and cropped back;
* micro-batches of ``batch_size`` under ``torch.inference_mode``, channels_last, and autocast when
  ``precision`` asks for it ("auto": fp32 on CPU, fp16 on CUDA);
* no frame: the networks zero-pad their convolutions, which draws a border the reference keeps
  (TEED/MTEED: a grey 128 frame, 3 px left and 1 px top, even on a blank page). The input is
  mirrored by ``MARGIN`` px on every side and the margin cropped off, so the image's edges are
  interior to the network. ``reference_exact=True`` skips that and keeps the reference's pixels
  (the fidelity tests and the speed bench compare at equal output that way).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from groundwork.checkpoints import WeightsSpec, load_into, read_state_dict, resolve
from groundwork.files import sha256_file

from ..registry import check_batch, register

VERSION = "torch-1"

COMMON_DEFAULTS: dict[str, Any] = {
    "detect_resolution": None,
    "batch_size": 4,
    "precision": "auto",
    "channels_last": True,
    "reference_exact": False,
}
MARGIN = 16  # px mirrored around the input (a multiple of every network's size multiple up to 16)

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class NetSpec:
    """One learned extractor: its public checkpoint and how it is run."""

    name: str
    summary: str
    weights: WeightsSpec
    build: Callable[[dict[str, torch.Tensor]], torch.nn.Module]  # a module whose state dict fits
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None  # N x 3 x H x W float RGB 0..255 -> input
    decode: Callable[..., torch.Tensor] | None = None  # (raw output, **options) -> N x H x W 0..255, ink low
    host_pre: Callable[[np.ndarray], np.ndarray] | None = None  # uint8 NHW3 -> NHWC, on the host
    multiple: int = 1  # the network needs H, W divisible by this
    pad_mode: str = "replicate"
    options: dict[str, Any] = field(default_factory=dict)  # network-specific options and their defaults
    prepare: Callable[[torch.nn.Module, dict[str, Any]], torch.nn.Module] | None = None  # e.g. reparameterise
    infer: Callable[..., np.ndarray] | None = None  # replaces encode/pad/run/crop/decode when set


def _same_size(batch: Any) -> np.ndarray:
    if isinstance(batch, list | tuple):
        shapes = {np.shape(img) for img in batch}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different sizes in one batch ({sorted(shapes)[:4]}): a batch is one "
                "N x H x W x 3 array; group images by size and call once per group"
            )
    return check_batch(batch)


def resize_short_side(img: np.ndarray, resolution: int) -> np.ndarray:
    """controlnet_aux's ``resize_image``: short side to ``resolution``, sides rounded to 64."""
    h, w = img.shape[:2]
    k = resolution / min(h, w)
    nh, nw = int(np.round(h * k / 64.0)) * 64, int(np.round(w * k / 64.0)) * 64
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


def _resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return dev


class NetExtractor:
    """The batch callable for one learned network; ``name``, ``version`` and ``weights_sha256`` go to build.json."""

    def __init__(self, spec: NetSpec, weights: str | os.PathLike | None, device: str, **options: Any) -> None:
        self.spec = spec
        self.name = spec.name
        self.version = VERSION
        self.options = options
        self.weights_path = resolve(spec.weights, weights)
        self.weights_sha256 = sha256_file(self.weights_path)
        self.device = _resolve_device(device)
        precision = options["precision"]
        if precision == "auto":
            precision = "fp16" if self.device.type == "cuda" else "fp32"
        if precision not in _DTYPES:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        self.precision = precision
        if int(options["batch_size"]) < 1:
            raise ValueError("batch_size must be at least 1")
        state = read_state_dict(self.weights_path)
        model = spec.build(state)
        load_into(model, state, f"{os.path.basename(self.weights_path)} (for {spec.name!r})")
        model = model.float().eval()
        if spec.prepare is not None:
            model = spec.prepare(model, options)
        model.requires_grad_(False)
        self.memory_format = torch.channels_last if options["channels_last"] else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)

    def __repr__(self) -> str:
        return f"NetExtractor({self.name!r}, device={str(self.device)!r}, sha256={self.weights_sha256[:12]}…)"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = _same_size(batch)
        n, h, w = batch.shape[:3]
        res = self.options["detect_resolution"]
        work = np.stack([resize_short_side(img, int(res)) for img in batch]) if res else batch
        m = 0 if self.options["reference_exact"] else MARGIN
        if m:  # numpy's "reflect" is reflect-101 and repeats for images smaller than the margin
            work = np.pad(work, ((0, 0), (m, m), (m, m), (0, 0)), mode="reflect")
        step = int(self.options["batch_size"])
        infer = self.spec.infer or standard_infer
        out = np.concatenate([infer(self, work[i : i + step]) for i in range(0, n, step)])
        if m:
            out = np.ascontiguousarray(out[:, m:-m, m:-m])
        if res and out.shape[1:] != (h, w):
            out = np.stack([cv2.resize(o, (w, h), interpolation=cv2.INTER_LINEAR) for o in out])
        return out

    def run_model(self, x: torch.Tensor) -> Any:
        """The network on a device tensor, with the chosen precision; returns float32 outputs."""
        x = x.contiguous(memory_format=self.memory_format)
        dtype = _DTYPES[self.precision]
        with torch.inference_mode():
            if dtype is None:
                return self.model(x)
            with torch.autocast(self.device.type, dtype=dtype):
                y = self.model(x)
            return [t.float() for t in y] if isinstance(y, list | tuple) else y.float()

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 N x H x W x C -> float N x C x H x W on the device (the cast runs on the device)."""
        t = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        return t.permute(0, 3, 1, 2).float()


def to_uint8(lines: torch.Tensor) -> np.ndarray:
    """Float drawing (0..255, ink low) -> uint8 by truncation, as the references' ``astype(uint8)``."""
    return lines.clamp(0, 255).to(torch.uint8).cpu().numpy()


def standard_infer(ext: NetExtractor, batch: np.ndarray) -> np.ndarray:
    """Encode, pad to the network's multiple, run, crop, decode."""
    spec = ext.spec
    h, w = batch.shape[1:3]
    with torch.inference_mode():
        x = spec.encode(ext.to_tensor(spec.host_pre(batch) if spec.host_pre else batch))
        ph, pw = (-h) % spec.multiple, (-w) % spec.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode=spec.pad_mode)
        raw = ext.run_model(x)
        lines = spec.decode(raw, **ext.options)
        return to_uint8(lines[:, :h, :w])


def register_net(spec: NetSpec) -> NetSpec:
    """Put ``spec`` in the lineart registry as a learned extractor."""

    def factory(weights=None, device="cpu", **options):
        return NetExtractor(spec, weights, device, **options)

    register(
        spec.name,
        kind="learned",
        summary=spec.summary,
        defaults={**COMMON_DEFAULTS, **spec.options},
    )(factory)
    return spec
