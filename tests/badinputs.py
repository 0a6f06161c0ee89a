"""Bad and awkward inputs, made in the test: one function writes them all into a folder.

Each file name says what it is; EXPECTED maps the name to the reject reason, or None when the
input must be kept (converted correctly).
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

from .conftest import gradient_image

EXPECTED: dict[str, str | None] = {
    "empty.jpg": "empty_file",
    "truncated.jpg": "decode_error",
    "text named.png": "decode_error",
    "bomb.png": "too_many_pixels",
    "cmyk.jpg": None,
    "sixteen bit.png": None,
    "palette transparent.png": None,
    "rgba.webp": None,
    "exif rotated.jpg": None,
    "animated.gif": "animated",
    "tiny 12x12.png": "too_small",
    "wide 25to1.png": "aspect_out_of_range",
    "blank white.png": None,
    "dots.in.the.name.jpg": None,
    "ünïcödé 名前.png": None,
}


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size with a tiny compressed body (never fully decodable)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def write_bad_inputs(folder: str) -> dict[str, str | None]:
    os.makedirs(folder, exist_ok=True)
    rgb = gradient_image(400, 300, seed=1)

    def save(name: str, im: Image.Image, **kw) -> None:
        im.save(os.path.join(folder, name), **kw)

    open(os.path.join(folder, "empty.jpg"), "wb").close()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    with open(os.path.join(folder, "truncated.jpg"), "wb") as fh:
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    with open(os.path.join(folder, "text named.png"), "w") as fh:
        fh.write("this is not a picture\n")
    with open(os.path.join(folder, "bomb.png"), "wb") as fh:
        fh.write(_png_bomb(20000, 20000))
    save("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=90)
    sixteen = (np.linspace(0, 65535, 400 * 300).reshape(300, 400)).astype(np.uint16)
    save("sixteen bit.png", Image.fromarray(sixteen))  # uint16 -> mode I;16
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette transparent.png", pal, transparency=0)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    save("rgba.webp", Image.fromarray(rgba), lossless=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    save("exif rotated.jpg", Image.fromarray(rgb), exif=exif.tobytes(), quality=90)
    frames = [Image.fromarray(gradient_image(300, 300, seed=s)) for s in range(3)]
    frames[0].save(
        os.path.join(folder, "animated.gif"), save_all=True, append_images=frames[1:], duration=100
    )
    save("tiny 12x12.png", Image.fromarray(gradient_image(12, 12)))
    save("wide 25to1.png", Image.fromarray(gradient_image(6400, 256)))
    save("blank white.png", Image.fromarray(np.full((320, 320, 3), 255, np.uint8)))
    save("dots.in.the.name.jpg", Image.fromarray(rgb), quality=90)
    save("ünïcödé 名前.png", Image.fromarray(rgb))
    # kohya sidecars: one with a BOM and awkward tags, one with invalid UTF-8
    with open(os.path.join(folder, "dots.in.the.name.txt"), "wb") as fh:
        fh.write("\ufeff<script>alert(1)</script>, >_<, ^_^, &amp;, 1girl".encode())
    with open(os.path.join(folder, "cmyk.txt"), "wb") as fh:
        fh.write(b"solo, \xff\xfe broken \xc3, smile")
    return dict(EXPECTED)
