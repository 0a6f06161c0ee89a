"""W-net training data: decoded at training size (reduced JPEG decode, cache), prefetched, resumable.

Real corpus images, a real Ray demo build, real tar shards; no mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.cli import main
from sharding.loader import batches
from wnet.config import PRESETS
from wnet.data import DecodeCache, decode_at, decode_batch, open_stream, reduction
from wnet.parts import plain_parts

from .wnet_build import shared_demo_build, tiny_toml

# A 32x32 demo build trained at 16 px: every illustration takes the reduced (1/2) JPEG decode.
SMALL = PRESETS["tiny"].replace(train={"batch_size": 4, "max_side": 16})
MULT = plain_parts(SMALL, 3).multiple(None)  # what tiny's sides divide by (4: three levels, pixel space)


@pytest.fixture(scope="module")
def build(corpus, ray_cluster, tmp_path_factory) -> str:
    return shared_demo_build(corpus, tmp_path_factory)


def _bucket_sized(corpus: str, name: str, size: tuple[int, int]) -> np.ndarray:
    bgr = cv2.imread(os.path.join(corpus, name), cv2.IMREAD_COLOR)
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


def test_reduced_jpeg_decode_is_close_to_a_full_decode_and_area_resize(corpus):
    stored, size = (512, 768), (42, 64)
    assert reduction(stored, size) == 8
    bgr = _bucket_sized(corpus, "style2paints_019.jpg", stored)
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    got = decode_at(data, stored, size, color=True)
    full = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    want = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
    assert got.shape == (64, 42, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.mean() < 4.0, diff.mean()  # libjpeg's scaled IDCT is a box-like downscale too
    grey = decode_at(data, stored, size, color=False)
    assert grey.shape == (64, 42)


def test_png_line_drawing_decodes_exactly_as_before(corpus):
    stored, size = (576, 640), (58, 64)
    gray = cv2.Canny(
        cv2.cvtColor(_bucket_sized(corpus, "paintsundo_003.jpg", stored), cv2.COLOR_BGR2GRAY), 80, 160
    )
    data = cv2.imencode(".png", 255 - gray)[1].tobytes()
    got = decode_at(data, stored, size, color=False)
    assert np.array_equal(got, cv2.resize(255 - gray, size, interpolation=cv2.INTER_AREA))
    with pytest.raises(ValueError, match="line drawing does not decode"):
        decode_at(b"\x89PNG\r\n\x1a\n" + bytes(100), stored, size, color=False)


@given(st.integers(16, 2048), st.integers(16, 2048), st.integers(1, 256), st.integers(1, 256))
def test_reduction_never_decodes_below_the_training_size(sw, sh, tw, th):
    factor = reduction((sw, sh), (tw, th))
    covers = lambda f: -(-sw // f) >= tw and -(-sh // f) >= th  # noqa: E731
    assert factor in (1, 2, 4, 8)
    assert factor == 1 or covers(factor)
    assert factor == 8 or not covers(factor * 2)


def test_cache_serves_the_same_arrays_and_stays_bounded(build):
    batch = next(iter(batches(build, 8, seed=0, resampled=False, weighted=False, decode=False, threads=1)))
    keep = list(range(len(batch.keys)))
    cache = DecodeCache()
    first = decode_batch(batch, keep, (16, 16), cache)
    again = decode_batch(batch, keep, (16, 16), cache)
    assert cache.misses == 2 * len(set(batch.keys)) and cache.hits >= 2 * len(keep)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.lines, again.lines)
    assert first.images.flags.writeable  # batches are fresh arrays; the cached members are read-only
    tiny = DecodeCache(max_bytes=16 * 16 * 3)
    decode_batch(batch, keep, (16, 16), tiny)
    assert 0 < tiny.bytes <= 16 * 16 * 3 and len(tiny._items) < len(keep)  # oldest members dropped


def test_prefetched_stream_equals_the_synchronous_one_and_resumes(build):
    ahead, inline = open_stream(build, SMALL, MULT, prefetch=2), open_stream(build, SMALL, MULT, prefetch=0)
    try:
        got = [next(ahead) for _ in range(8)]
        want = [next(inline) for _ in range(8)]
        for a, b in zip(got, want, strict=True):
            assert a.keys == b.keys and a.state == b.state and a.extractors == b.extractors
            assert np.array_equal(a.images, b.images) and np.array_equal(a.lines, b.lines)
            assert a.images.shape[1:] == (16, 16, 3) and a.lines.shape[1:] == (16, 16)
        # state() is after the last batch returned, not after the ones prefetched
        assert ahead.state() == got[-1].state and ahead.state() == inline.state()
        assert ahead.cache.hits > 0  # 32 draws of a 12-sample build: members come back decoded
    finally:
        ahead.close()
        inline.close()
    resumed = open_stream(build, SMALL, MULT, state=got[3].state)
    try:
        for b in got[4:]:
            r = next(resumed)
            assert (
                r.keys == b.keys and np.array_equal(r.images, b.images) and np.array_equal(r.lines, b.lines)
            )
    finally:
        resumed.close()


def test_decoding_runs_ahead_in_the_background_and_close_stops_it(build):
    stream = open_stream(build, SMALL, MULT, prefetch=3)
    next(stream)
    deadline = time.time() + 60
    while stream._queue.qsize() < 3:  # filled while the caller does something else
        assert time.time() < deadline
        time.sleep(0.01)
    thread = stream._thread
    stream.close()
    assert not thread.is_alive()


def _corrupt_first_jpeg(build: str, copy: str) -> str:
    shutil.copytree(build, copy)
    with open(os.path.join(copy, "shards.json")) as fh:
        path = os.path.join(copy, json.load(fh)["shards"][0]["path"])
    with tarfile.open(path) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(".jpg"))
    with open(path, "r+b") as fh:  # same size, so the loader's shard check passes; the bytes do not decode
        fh.seek(member.offset_data)
        fh.write(bytes(member.size))
    return member.name[: -len(".jpg")]


def test_an_undecodable_member_stops_training_with_one_line(build, tmp_path, capsys):
    key = _corrupt_first_jpeg(build, str(tmp_path / "bad"))
    cfg = tiny_toml(str(tmp_path / "t.toml"), heldout=0.0, checkpoint_every=1000)
    code = main(["train", str(tmp_path / "bad"), "--config", cfg, "--run", str(tmp_path / "run"), "--steps", "40",
                 "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"sample {key}: illustration does not decode" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
