"""Fuzz the scan's read -> decode -> measure path with mutants of real corpus images.

Mutations: truncation, bit flips, byte runs overwritten, chunks spliced in from other images and
headers of one format glued to the body of another. Every mutant must end as one scan row whose
reason is in the vocabulary, and none may reach the ``scan_error`` catch-all: a decoder fault the
guard did not foresee fails this test. ``LINEPAIRS_FUZZ=N`` runs N mutants (default 300).
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from curation.decode import DecodeReject, decode_image
from curation.records import REJECT_REASONS
from curation.scan import ScanSettings, scan_row

FORMATS = [("JPEG", {"quality": 85}), ("PNG", {}), ("WEBP", {"quality": 80}), ("GIF", {}),
           ("TIFF", {}), ("BMP", {}), ("TIFF", {"compression": "tiff_lzw"}), ("JPEG", {"progressive": True})]  # fmt: skip
ALL_REASONS = {r for reasons in REJECT_REASONS.values() for r in reasons}
SETTINGS = ScanSettings(min_side=32, max_pixels=4_000_000)


@pytest.fixture(scope="module")
def seeds(corpus) -> list[bytes]:
    """Real corpus pictures, shrunk (fast mutants) and saved in every supported format, plus originals."""
    names = sorted(os.listdir(corpus))[:8]
    out = []
    for i, name in enumerate(names):
        path = os.path.join(corpus, name)
        with Image.open(path) as im:
            small = im.convert("RGB")
            small.thumbnail((160, 160))
        fmt, kw = FORMATS[i % len(FORMATS)]
        for f, k in (FORMATS[i % len(FORMATS)], FORMATS[(i + 3) % len(FORMATS)]):
            buf = io.BytesIO()
            small.save(buf, f, **k)
            out.append(buf.getvalue())
        if os.path.getsize(path) < 400_000:
            out.append(open(path, "rb").read())
    return out


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        n = len(buf)
        if n < 2:
            break
        if op == 0:  # truncate
            del buf[rng.randrange(1, n) :]
        elif op == 1:  # flip bits, mostly in the header where the structure lives
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(min(n, 512)) if rng.random() < 0.7 else rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == 2:  # overwrite a run with one interesting byte
            i = rng.randrange(n)
            buf[i : i + rng.randint(1, 64)] = bytes([rng.choice((0, 0xFF, 0x7F, 0x80))]) * rng.randint(1, 64)
        elif op == 3:  # splice a chunk of another image in
            other = rng.choice(others)
            a = rng.randrange(len(other))
            i = rng.randrange(n)
            buf[i:i] = other[a : a + rng.randint(1, 2048)]
        elif op == 4:  # another format's header on this body
            other = rng.choice(others)
            k = rng.randint(4, 64)
            buf[:k] = other[:k]
        else:  # lengths and sizes: write a big or zero 32-bit word somewhere in the header
            i = rng.randrange(min(n, 256))
            buf[i : i + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
    return bytes(buf)


def check_mutant(data: bytes, path: str) -> str:
    try:
        decode_image(data, SETTINGS.max_pixels)
    except DecodeReject:
        pass  # the only exception decode may raise
    with open(path, "wb") as fh:
        fh.write(data)
    row, _ = scan_row({"source": "fuzz", "source_id": "m", "location": path}, SETTINGS)
    assert row["status"] in ("kept", "rejected")
    if row["status"] == "rejected":
        assert row["reason"] in ALL_REASONS and row["detail"], row
        assert row["reason"] != "scan_error", row["detail"]  # an unforeseen fault in the decode path
    return row["reason"] or "kept"


def test_seeded_mutants_all_end_as_rows(seeds, tmp_path):
    count = int(os.environ.get("LINEPAIRS_FUZZ", "300"))
    rng = random.Random(12)
    outcomes: dict[str, int] = {}
    path = str(tmp_path / "mutant.img")
    for _ in range(count):
        reason = check_mutant(mutate(rng.choice(seeds), rng, seeds), path)
        outcomes[reason] = outcomes.get(reason, 0) + 1
    print(f"{count} mutants: {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) == count
    assert (
        outcomes.get("decode_error", 0) > 0 and outcomes.get("kept", 0) > 0
    )  # the mutator bites, not always


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_hypothesis_mutants(seeds, tmp_path, data):
    base = data.draw(st.sampled_from(seeds))
    cut = data.draw(st.integers(1, len(base)))
    edits = data.draw(st.lists(st.tuples(st.integers(0, cut - 1), st.integers(0, 255)), max_size=12))
    buf = bytearray(base[:cut])
    for i, b in edits:
        buf[i] = b
    check_mutant(bytes(buf), str(tmp_path / "hyp.img"))


def test_random_bytes_named_as_images(tmp_path):
    rng = np.random.default_rng(3)
    for n in (1, 7, 64, 4096):
        reason = check_mutant(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), str(tmp_path / "r.png"))
        assert reason == "decode_error"
