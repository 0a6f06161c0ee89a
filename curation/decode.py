"""Decode any still image into 8-bit RGB, safely.

One function, used by the scan (to validate and measure) and by materialize (to get pixels).
The pixel-count guard reads only the header before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from urllib.parse import unquote

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own guard (max_pixels) replaces PIL's global one; PIL's is a process-wide setting.
Image.MAX_IMAGE_PIXELS = None


class DecodeReject(Exception):
    """An input that cannot become an RGB image; ``reason`` is from the reject vocabulary."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Decoded:
    rgb: np.ndarray  # H x W x 3 uint8
    source_mode: str
    source_format: str


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite straight alpha onto white paper, in integer math (deterministic)."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey: PIL's convert("L") clips at 255 instead of scaling.
        arr = np.asarray(im).astype(np.uint32)
        gray = ((np.clip(arr, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        hi = float(arr.max()) if arr.size else 1.0
        scale = 255.0 if hi <= 1.0 else (255.0 / 65535.0 if hi > 255 else 1.0)
        gray = np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        return _flatten_alpha(np.asarray(im.convert("RGBA")))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, or None when it is not an image we can read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None


def decode_image(data: bytes, max_pixels: int) -> Decoded:
    """Bytes -> RGB uint8 with EXIF orientation applied and alpha flattened on white."""
    if not data:
        raise DecodeReject("empty_file", "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise DecodeReject("too_many_pixels", f"{w}x{h} = {w * h} pixels > {max_pixels}")
            if getattr(im, "n_frames", 1) > 1:
                raise DecodeReject("animated", f"{im.format} with {im.n_frames} frames")
            fmt = im.format or "?"
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            rgb = _to_rgb(im)
    except DecodeReject:
        raise
    except UnidentifiedImageError:
        raise DecodeReject("decode_error", "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeReject("decode_error", f"{type(exc).__name__}: {exc}"[:300]) from None
    return Decoded(np.ascontiguousarray(rgb), mode, fmt)


def decode_for_metrics(data: bytes, max_pixels: int, long_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(RGB with a long side of at least ``long_side`` where the file allows, true (width, height)).

    A JPEG of more than twice ``long_side`` is decoded in draft mode: libjpeg scales the DCT blocks
    by 1/2, 1/4 or 1/8 while decoding, so a 4000 px post costs a fraction of a full decode. Every
    entropy-coded byte is still read, so a truncated or corrupt file fails here as in
    ``decode_image``. The size is the full image's, after EXIF rotation. Anything else: ``decode_image``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as probe:
                draft = probe.format == "JPEG" and max(probe.size) >= 2 * long_side
                w, h = probe.size
    except Exception:
        draft = False
    if not draft or w * h > max_pixels:
        rgb = decode_image(data, max_pixels).rgb
        return rgb, (rgb.shape[1], rgb.shape[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            if getattr(im, "n_frames", 1) > 1:
                raise DecodeReject("animated", f"{im.format} with {im.n_frames} frames")
            scale = max(w, h) / long_side
            im.draft("RGB", (int(w / scale), int(h / scale)))  # the smallest DCT scale still >= long_side
            im.load()
            rotated = ImageOps.exif_transpose(im)
            swapped = rotated.size != im.size and rotated.size == im.size[::-1]
            rgb = _to_rgb(rotated)
    except DecodeReject:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeReject("decode_error", f"{type(exc).__name__}: {exc}"[:300]) from None
    return np.ascontiguousarray(rgb), ((h, w) if swapped else (w, h))


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints and shards can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


TAR_SCHEME = "tar://"


def parse_tar_location(location: str) -> tuple[str, int, int, str]:
    """``tar://<quoted path>#<offset>:<size>:<quoted member>`` -> (path, offset, size, member)."""
    body = location[len(TAR_SCHEME) :]
    path, sep, frag = body.partition("#")  # '#' inside the path or member name is percent-quoted
    offset, _, rest = frag.partition(":")
    size, _, member = rest.partition(":")
    if not sep or not offset.isdigit() or not size.isdigit():
        raise ValueError(f"malformed tar location {location[:200]!r}")
    return unquote(path), int(offset), int(size), unquote(member)


def read_location(location: str) -> bytes:
    """The bytes of an input: a file path, or a member inside an uncompressed tar (read in place).

    Raises OSError when the bytes cannot be read in full (the scan turns it into a reject).
    """
    if not location.startswith(TAR_SCHEME):
        return read_bytes(location)
    try:
        path, offset, size, member = parse_tar_location(location)
    except ValueError as exc:
        raise OSError(str(exc)) from None
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise OSError(f"tar member {member!r} of {path} is truncated ({len(data)} of {size} bytes)")
    return data
