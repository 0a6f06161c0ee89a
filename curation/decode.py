"""Decode any still image into 8-bit RGB, safely.

One function, used by the scan (to validate and measure) and by materialize (to get pixels).
The pixel-count guard reads only the header before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from groundwork.limits import MAX_PIXELS

# Our own guard (max_pixels) replaces PIL's global one; PIL's is a process-wide setting.
Image.MAX_IMAGE_PIXELS = None

# The still-image formats the sources accept (IMAGE_EXTS); Pillow's other ~40 plugins (EPS runs
# Ghostscript, PSD, FITS, ...) are attack surface we do not need. MPO is how Pillow names a
# camera JPEG with a second picture.
Image.init()  # register every plugin once, so the ``formats=`` filter below can name them
SUPPORTED_FORMATS = tuple(
    f for f in ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF") if f in Image.OPEN
)
# The byte twin of the pixel guard (scan.max_bytes): no input is read past this.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


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
        with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as im:
            return im.size
    except Exception:
        return None


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Bytes -> RGB uint8 with EXIF orientation applied and alpha flattened on white."""
    if not data:
        raise DecodeReject("empty_file", "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
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
    except Exception as exc:
        # Pillow's plugins raise what they like on hostile bytes (struct.error from EXIF,
        # TypeError from a TIFF without dimensions, RecursionError ...): all are one bad input.
        raise DecodeReject("decode_error", fault(exc)) from None
    return Decoded(np.ascontiguousarray(rgb), mode, fmt)


def fault(exc: BaseException) -> str:
    """One line naming an exception: ``struct.error: ...``, ``TypeError: ...``."""
    kind = type(exc)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return " ".join(f"{name}: {exc}".split())[:300]


def read_bytes(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``.

    The type and size are checked before reading: a FIFO would block forever, a link to
    ``/dev/zero`` or a sparse 8 GiB file would be read whole. Raises DecodeReject
    (``not_a_file`` / ``too_many_bytes``) for those, OSError when the file cannot be read.
    """
    st = os.stat(path)  # follows links: a link to a device is a device
    check_regular(path, st, max_bytes)
    # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        check_regular(path, os.fstat(fh.fileno()), max_bytes)
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DecodeReject("too_many_bytes", f"more than {max_bytes} bytes (scan.max_bytes)")
    return data


def check_regular(path: str, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next(
            (name for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
             if test(st.st_mode)), "not a regular file",
        )  # fmt: skip
        raise DecodeReject("not_a_file", f"{kind}, never opened for reading")
    if st.st_size > max_bytes:
        raise DecodeReject("too_many_bytes", f"{st.st_size} bytes > {max_bytes} (scan.max_bytes)")


class InputTimeout(DecodeReject):
    """One input took longer than ``scan.max_seconds``."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise InputTimeout (a DecodeReject ``too_slow``) in this block after ``seconds``.

    A SIGALRM timer: Python code (and Pillow between C calls) is interrupted, so no single input
    can stall a scan chunk. Only the main thread can take signals; elsewhere this is a no-op.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise InputTimeout("too_slow", f"took more than {seconds:g} s (scan.max_seconds)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
