"""The one rule for which shard member is a sample's (``groundwork.contract.sample_member``), and
the three readers that take a shard's samples by it: the loader's reader, the W-net's whole-shard
reader, `linepairs export`'s stream. A real tar with odd members; every reader sees the same samples."""

from __future__ import annotations

import io
import tarfile

from groundwork.contract import sample_member
from pipelines.export.source import stream_samples
from sharding.layout import Layout
from sharding.loading.reader import ShardReader
from sharding.shardfile import sample_members


def test_sample_member_rule():
    assert sample_member("000001.jpg") == ("000001", "jpg")
    assert sample_member("k.lineart.canny.png") == ("k", "lineart.canny.png")  # the first dot splits
    assert sample_member("noext") is None
    assert sample_member("folder/k.jpg") is None  # not at the top level
    assert sample_member("k./x") is None
    assert sample_member(".hidden") == ("", "hidden")  # a name the writer never makes, still KEY.EXT


def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_every_reader_takes_the_same_members(tmp_path):
    data = _tar([
        ("a.jpg", b"A"), ("a.json", b"{}"), ("a.lineart.canny.png", b"C"),
        ("sub", None), ("sub/b.jpg", b"nested"), ("README", b"no extension"),
        ("b.jpg", b"B"), ("b.json", b"[]"),
    ])  # fmt: skip
    expected = {
        "a": {"jpg": b"A", "json": b"{}", "lineart.canny.png": b"C"},
        "b": {"jpg": b"B", "json": b"[]"},
    }
    (tmp_path / "shards" / "64x64").mkdir(parents=True)
    shard = "shards/64x64/000000.tar"
    (tmp_path / shard).write_bytes(data)
    layout = Layout(str(tmp_path))

    assert sample_members(data) == expected
    assert sample_members(data, ["json"]) == {k: {"json": v["json"]} for k, v in expected.items()}
    assert dict(stream_samples(layout, shard)) == expected
    index = ShardReader(layout).index(shard)
    assert {k: {e: data[o : o + n] for e, (o, n) in exts.items()} for k, exts in index.items()} == expected
