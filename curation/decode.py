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

import cv2
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
    scale: int = 1  # the JPEG was decoded at 1/scale of its size in the DCT domain (decode_for_crop)
    size: tuple[int, int] = (0, 0)  # (width, height) at full scale, EXIF orientation applied

    def __post_init__(self) -> None:
        if self.size == (0, 0):
            self.size = (self.rgb.shape[1], self.rgb.shape[0])


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
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse (OSError, SyntaxError, struct.error, EOFError, a bomb): not an image we read; the decode path names the reason
        return None


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Pillow's lazy open (header only) with the byte, pixel and frame guards."""
    if not data:
        raise DecodeReject("empty_file", "0 bytes")
    im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    w, h = im.size
    if w * h > max_pixels:
        raise DecodeReject("too_many_pixels", f"{w}x{h} = {w * h} pixels > {max_pixels}")
    if getattr(im, "n_frames", 1) > 1:
        raise DecodeReject("animated", f"{im.format} with {im.n_frames} frames")
    return im


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Bytes -> RGB uint8 with EXIF orientation applied and alpha flattened on white."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = _open_checked(data, max_pixels)
            fmt = im.format or "?"
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            rgb = _to_rgb(im)
    except DecodeReject:
        raise
    except UnidentifiedImageError:
        raise DecodeReject("decode_error", "not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure is a decode_error reject
        # Pillow's plugins raise what they like on hostile bytes (struct.error from EXIF,
        # TypeError from a TIFF without dimensions, RecursionError ...): all are one bad input.
        raise DecodeReject("decode_error", fault(exc)) from None
    return Decoded(np.ascontiguousarray(rgb), mode, fmt)


# JPEG decodes at 1/8, 1/4 or 1/2 of its size in the DCT domain (libjpeg's scaled IDCT): less work
# than a full decode, and no full-size array to shrink afterwards.
DCT_SCALES = (8, 4, 2)
_REDUCED = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}
# EXIF orientation -> the same transform as Pillow's ImageOps.exif_transpose, on an H x W x C array
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: a.transpose(1, 0, 2)[::-1],
}


def dct_scale(size: tuple[int, int], box: tuple[int, int, int, int], bucket: tuple[int, int]) -> int:
    """The largest DCT scale (8, 4, 2; else 1) at which crop ``box`` of an image of ``size`` still
    has at least the ``bucket``'s pixels each way (the resize stays a reduction) and lands exactly
    on the reduced pixel grid: each edge a multiple of the scale, or the image's own edge. On the
    grid, the crop is the same region of the picture; off it, it would shift by up to half a
    reduced pixel."""
    (w, h), (left, top, right, bottom), (bw, bh) = size, box, bucket
    for s in DCT_SCALES:
        if (
            right - left >= s * bw and bottom - top >= s * bh
            and left % s == 0 and top % s == 0
            and (right % s == 0 or right == w) and (bottom % s == 0 or bottom == h)
        ):  # fmt: skip
            return s
    return 1


def scaled_box(box: tuple[int, int, int, int], scale: int) -> tuple[int, int, int, int]:
    """``box`` in the pixels of a 1/``scale`` decode (libjpeg rounds a scaled size up)."""
    left, top, right, bottom = box
    return left // scale, top // scale, -(-right // scale), -(-bottom // scale)


def decode_for_crop(
    data: bytes, max_pixels: int, box: tuple[int, int, int, int], bucket: tuple[int, int]
) -> Decoded:
    """Like ``decode_image``, for materialize: a JPEG is decoded by OpenCV straight into an RGB
    array (no Pillow image to copy out), at ``dct_scale`` when that still covers ``box`` at the
    ``bucket``'s size; ``Decoded.size`` is the full size, ``scaled_box(box, scale)`` the crop.

    Only baseline/progressive 8-bit YCbCr or grey JPEG takes this path (the same pixels as Pillow's
    decode at full scale, tests/test_decode_reduced.py); CMYK, every other format (WebP included:
    Pillow cannot decode it scaled) and any JPEG OpenCV refuses go through ``decode_image``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = _open_checked(data, max_pixels)
            # A file not ending in EOI may be truncated: OpenCV would fill the rest with grey where
            # Pillow refuses; decode_image gives Pillow's verdict.
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or not data.endswith(b"\xff\xd9"):
                return decode_image(data, max_pixels)
            orientation = im.getexif().get(0x0112, 1)
    except DecodeReject:
        raise
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse: decode_image decodes again and names the reason
        return decode_image(data, max_pixels)
    w, h = im.size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    scale = dct_scale((w, h), box, bucket)
    flags = cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR_RGB
    if scale > 1:
        flags |= _REDUCED[scale] & ~cv2.IMREAD_COLOR  # the reduction bit, without the BGR flag
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    stored = (-(-im.size[0] // scale), -(-im.size[1] // scale))
    if rgb is None or (rgb.shape[1], rgb.shape[0]) != stored:
        return decode_image(data, max_pixels)
    if orientation in _ORIENT:
        rgb = np.ascontiguousarray(_ORIENT[orientation](rgb))
    return Decoded(rgb, im.mode, "JPEG", scale, (w, h))


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
