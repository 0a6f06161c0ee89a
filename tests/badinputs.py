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


# ---------------------------------------------------------------- hostile inputs (issue 12)


def exif_wrong_type_jpeg(rgb: np.ndarray) -> bytes:
    """A JPEG whose EXIF rotates (orientation 6) and carries a SHORT tag holding -1 as SSHORT:
    ``ImageOps.exif_transpose`` re-serialises the EXIF and dies with ``struct.error``."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0128, 8, 1, struct.pack("<hh", -1, 0))]
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        tiff += struct.pack("<HHI", tag, typ, count) + value
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", exif=b"Exif\x00\x00" + tiff + b"\x00" * 4)
    return buf.getvalue()


def broken_tiff(rgb: np.ndarray) -> bytes:
    """A valid one-frame TIFF whose next-IFD pointer leads to a frame without dimensions:
    Pillow's ``n_frames`` raises ``TypeError: Missing dimensions``."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, ifd)[0]
    struct.pack_into("<I", data, ifd + 2 + 12 * count, len(data))
    data += struct.pack("<H", 1) + struct.pack("<HHI", 259, 3, 1) + struct.pack("<HH", 1, 0) + b"\x00" * 4
    return bytes(data)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 400 300\nshowpage\n%%EOF\n"
SJIS_NAME = "sjis_テスト.png".encode("shift_jis")  # a name from a Japanese zip: not valid UTF-8


def write_hostile_folder(folder: str, outside: str) -> dict[str, str | None]:
    """Files a folder source must survive, plus links out of it; name -> expected reason (None: decodes).

    ``outside`` is a folder beside (not below) ``folder`` holding the target of a leaking link.
    """
    os.makedirs(folder, exist_ok=True)
    os.makedirs(outside, exist_ok=True)
    rgb = gradient_image(400, 300, seed=3)
    join = lambda name: os.path.join(folder, name)  # noqa: E731
    Image.fromarray(rgb).save(join("real.png"))
    Image.fromarray(gradient_image(400, 300, seed=4)).save(os.path.join(outside, "secret.png"))
    with open(join("exif wrong type.jpg"), "wb") as fh:
        fh.write(exif_wrong_type_jpeg(rgb))
    with open(join("broken tiff.png"), "wb") as fh:
        fh.write(broken_tiff(rgb))
    with open(join("eps named.png"), "wb") as fh:
        fh.write(EPS)
    os.mkfifo(join("fifo.png"))
    with open(join("sparse.png"), "wb") as fh:  # 8 GiB of holes: no disk, but read whole it is 8 GiB
        fh.truncate(8 << 30)
    os.symlink("/dev/zero", join("zero.png"))
    os.symlink("/etc/passwd", join("passwd.png"))
    os.symlink(os.path.join(outside, "secret.png"), join("outside.png"))
    os.symlink(join("real.png"), join("inside link.png"))  # stays in the folder: followed
    os.symlink("/etc/passwd", join("real.txt"))  # a sidecar link out: never read as tags
    os.symlink(folder, join("loop"))  # a folder link back to itself: never followed
    with open(os.path.join(os.fsencode(folder), SJIS_NAME), "wb") as fh:
        Image.fromarray(gradient_image(400, 300, seed=5)).save(fh, "PNG")
    return {
        "real.png": None,
        "inside link.png": None,
        "sjis_\\x83e\\x83X\\x83g.png": None,
        "exif wrong type.jpg": "decode_error",
        "broken tiff.png": "decode_error",
        "eps named.png": "decode_error",
        "fifo.png": "not_a_file",
        "sparse.png": "too_many_bytes",
        "zero.png": "outside_source",
        "passwd.png": "outside_source",
        "outside.png": "outside_source",
        "real.txt": "outside_source",  # the caption file: its own row, never read (real.png has no tags)
    }


def _post(post_id, **extra) -> dict:
    post = {"id": post_id, "rating": "g", "image_width": 400, "image_height": 300, "score": 5,
            "fav_count": 1, "file_ext": "png", "tag_string_general": "a b c d e f"}  # fmt: skip
    post.update(extra)
    return post


def write_hostile_api(folder: str) -> dict[str, str | None]:
    """A Danbooru API folder with overflowing, deeply nested and badly rated posts, a JSON array cut
    short and an image no post names; source_id -> expected reason (None: kept or a pixel verdict)."""
    import json

    os.makedirs(folder, exist_ok=True)
    big = 2**64 + 7
    lines = [
        json.dumps(_post(10)),
        json.dumps(_post(big)),
        json.dumps(_post(11, image_width=big)),
        json.dumps(_post(12, fav_count=-big)),
        json.dumps(_post(19, score="9" * 5000)),
        "[" * 100_000 + "]" * 100_000,
        json.dumps({k: v for k, v in _post(13).items() if k != "rating"}),
        json.dumps(_post(14, rating=None)),
        json.dumps(_post(15, rating=["e"])),
        json.dumps(_post(16, rating=True)),
        json.dumps(_post(17, rating=7)),
        json.dumps(_post(18, rating="x")),
    ]
    with open(os.path.join(folder, "posts.jsonl"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    array = json.dumps([_post(20), _post(21)])
    with open(os.path.join(folder, "cut.json"), "w") as fh:
        fh.write(array[:-1] + ', {"id": 22, "rating": "g", "tag_st')  # cut inside the third post
    for post_id in (10, 11, 13, 20, 21, 500):
        Image.fromarray(gradient_image(400, 300, seed=post_id)).save(os.path.join(folder, f"{post_id}.png"))
    where = os.path.join(folder, "posts.jsonl")
    return {
        "10": None,
        f"{where}:2": "bad_metadata",  # the id beyond 64 bits
        "11": "bad_metadata",
        "12": "bad_metadata",
        "19": "bad_metadata",
        f"{where}:6": "bad_metadata",  # 100 000 nested brackets
        **{str(i): "bad_rating" for i in range(13, 19)},
        "20": None,
        "21": None,
        f"{os.path.join(folder, 'cut.json')}:2": "bad_metadata",
        "500.png": "no_metadata",
    }
