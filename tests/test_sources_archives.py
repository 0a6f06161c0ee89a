"""Archives read in place with their sidecars: WebDataset tars (the form picollect's danbooru tars,
any WebDataset dump and a linepairs OUT share), .tar.gz, .zip and hfutils-indexed tars, each built
here laid out like the published dumps and read back byte-exact (no mocks)."""

from __future__ import annotations

import json
import os
import tarfile
import zipfile

import pytest

from curation.decode import DecodeReject
from curation.fetch import read_location
from curation.sources import iter_records, parse_source
from curation.sources.archives import index_path, list_archive

from .dumps import hf_row, write_parquet, write_tar, write_tgz, write_zip
from .test_object_storage import s3  # noqa: F401  (the moto S3 server fixture)

NAMES = ["anime2sketch_001.jpg", "sketchkeras_002.jpg", "style2paints_004.jpg", "style2paints_021.png",
         "paintsundo_003.jpg", "style2paints_008.jpg"]  # fmt: skip


@pytest.fixture(scope="module")
def images(corpus) -> list[bytes]:
    out = []
    for name in NAMES:
        with open(os.path.join(corpus, name), "rb") as fh:
            out.append(fh.read())
    return out


def by_reason(recs):
    out: dict = {}
    for r in recs:
        out.setdefault(r.reject_reason, []).append(r)
    return out


def sidecar_members(images: list[bytes]) -> dict[str, bytes]:
    """The issue's 6-image tar: three images with a Danbooru post JSON beside them, plus line
    drawings a linepairs OUT would hold (not images of posts)."""
    members = {}
    for i, data in enumerate(images, 1):
        ext = "png" if data[:4] == b"\x89PNG" else "jpg"
        members[f"{i}.{ext}"] = data
        if i <= 3:
            post = {
                "id": i,
                "rating": "g",
                "tag_string_general": f"1girl solo tag{i}",
                "tag_string_artist": "someone",
            }
            members[f"{i}.json"] = json.dumps(post).encode()
        members[f"{i}.lineart.canny.png"] = images[0]
    return members


def test_sidecar_tar_with_parquet_keeps_all_six(images, tmp_path):
    root = tmp_path / "dump"
    write_tar(str(root / "images" / "0000.tar"), sidecar_members(images))
    # the parquet gives tags to posts 1-5; post 6 has no tags of its own and no sidecar
    rows = [hf_row(i, tag_string_general=f"from_parquet tag{i}") for i in range(1, 6)] + [hf_row(6)]
    write_parquet(str(root / "metadata.parquet"), rows)
    notes: list[str] = []
    recs = list(iter_records(parse_source(str(root)), notes=notes.append))
    assert [r.source_id for r in recs] == ["1", "2", "3", "4", "5", "6"]
    assert all(r.reject_reason is None for r in recs)
    # each post is its own single-suffix image member, read byte for byte
    assert [read_location(r.location) for r in recs] == images
    # precedence: the parquet row's tags win over the .json sidecar's
    assert recs[0].tags["general"] == ["from_parquet", "tag1"]
    # the six line drawings are neither images nor metadata: one note, no rejects
    assert notes == ["6 member(s) are neither images nor their metadata, skipped: 6 *.lineart.canny.png"]


def test_sidecars_fill_what_the_row_lacks(images, tmp_path):
    root = tmp_path / "dump"
    members = sidecar_members(images[:2])
    members["2.txt"] = b"blue hair, red eyes, a girl standing in the rain."
    write_tar(str(root / "images" / "0000.tar"), members)
    # a metadata table with ids and ratings only: tags come from the .json, then the caption file
    write_parquet(str(root / "meta.parquet"), [{"id": 1, "rating": "s"}, {"id": 2, "rating": "g"}])
    one, two = iter_records(parse_source(str(root)))
    assert one.rating == "s"  # the row wins over the .json's "g"
    assert one.tags["general"] == ["1girl", "solo", "tag1"] and one.tags["artist"] == ["someone"]
    assert two.tags["general"] == ["1girl", "solo", "tag2"]  # the .json comes before the .txt
    assert two.caption == "a girl standing in the rain."  # the .txt's prose still fills the caption


def test_webdataset_tar_tgz_and_zip_give_the_same_records(images, tmp_path):
    members = sidecar_members(images)
    write_tar(str(tmp_path / "wds" / "shard-000000.tar"), members)
    write_tgz(str(tmp_path / "shard.tar.gz"), members)
    # zips follow the folder rule (kohya sets zipped): no line drawings there, they would be images
    write_zip(str(tmp_path / "shard.zip"), {k: v for k, v in members.items() if "lineart" not in k})
    seen = {}
    for path in (tmp_path / "wds", tmp_path / "shard.tar.gz", tmp_path / "shard.zip"):
        spec = parse_source(str(path))
        assert spec.kind == "webdataset"
        recs = list(iter_records(spec, notes=lambda line: None))
        seen[path.name] = [(r.source_id, r.post_id, r.rating, r.tags["general"]) for r in recs]
        # the images come back byte-exact, in any order (a .tar.gz rewinds for an earlier member)
        for r in reversed(recs):
            assert read_location(r.location) == images[int(r.source_id) - 1]
    first = seen["wds"]
    assert seen["shard.tar.gz"] == first and seen["shard.zip"] == first
    assert [x[0] for x in first] == ["1", "2", "3", "4", "5", "6"]
    # posts with a .json have its rating and tags; the others are unrated with no tags (a folder image)
    assert first[0][2:] == ("g", ["1girl", "solo", "tag1"]) and first[5][1:] == (6, None, [])


def test_zip_of_a_kohya_folder_uses_the_folder_rule_and_caps_bombs(images, tmp_path):
    bomb = b"\0" * (32 << 20)
    write_zip(
        str(tmp_path / "set.zip"),
        {"train/img.001.png": images[3], "train/img.001.caption": b"1girl, solo, a girl on a bench.",
         "train/zero.png": bomb, "../escape.png": images[0],
         "__MACOSX/train/._img.001.png": b"\0\5\26\7 AppleDouble", "train/.DS_Store": b"x"},
    )  # fmt: skip
    notes: list[str] = []
    recs = by_reason(iter_records(parse_source(str(tmp_path / "set.zip")), notes=notes.append))
    # macOS's resource-fork copies are not images (a folder walk skips hidden names too)
    assert notes == [
        "2 member(s) are neither images nor their metadata, skipped: 2 hidden (.name, __MACOSX/)"
    ]
    assert len(recs[None]) == 2
    (kept,) = [r for r in recs[None] if r.location and "img.001" in r.location]
    assert kept.tags["general"] == ["1girl", "solo"] and kept.caption == "a girl on a bench."
    assert read_location(kept.location) == images[3]
    assert "leaves the archive" in recs["unsafe_member"][0].reject_detail
    # a member inflating past the byte cap stops at the cap, before it is all in memory
    (zero,) = [r for r in recs[None] if "zero.png" in r.location]
    with pytest.raises(DecodeReject, match="too_many_bytes"):
        read_location(zero.location, max_bytes=1 << 20)


def test_hfutils_index_is_used_and_checked(images, tmp_path):
    from hfutils.index.make import tar_create_index  # deepghs' own indexer, as the published sidecars

    members = {f"{i}.jpg": data for i, data in enumerate(images, 1)}
    tar = str(tmp_path / "images" / "0000.tar")
    write_tar(tar, members)
    tar_create_index(tar, silent=True)
    assert os.path.exists(index_path(tar))
    # damage the header of a middle member: a header walk stops there, the index still lists all six
    with tarfile.open(tar) as tf:
        middle = tf.getmember("3.jpg").offset
    with open(tar, "r+b") as fh:
        fh.seek(middle)
        fh.write(b"\xff" * 512)
    listing = list_archive("d", tar, str(tmp_path))
    assert [m.name for m in listing.members] == list(members) and not listing.problems and not listing.notes
    assert [read_location(m.location) for m in listing.members] == images
    # an index of another tar (a different size) is not trusted: the headers are read, and a note says why
    with open(tar, "ab") as fh:
        fh.write(b"\0" * 1024)
    listing = list_archive("d", tar, str(tmp_path))
    assert "not a usable index" in listing.notes[0] and "bytes" in listing.notes[0]
    assert listing.problems and listing.problems[0].reject_reason == "bad_archive"  # the damaged header
    # an index of the same size that names other members fails the header spot-check
    write_tar(tar, {f"{i}.jpg": data for i, data in enumerate(images, 1)})
    index = json.load(open(index_path(tar)))
    index["files"] = {k.replace(".jpg", ".png"): v for k, v in index["files"].items()}
    json.dump(index, open(index_path(tar), "w"))
    listing = list_archive("d", tar, str(tmp_path))
    assert "header names" in listing.notes[0] and [m.name for m in listing.members] == list(members)


def test_unsafe_and_damaged_archives_are_rejects_not_errors(images, tmp_path):
    write_tgz(str(tmp_path / "a.tar.gz"), {"1.jpg": images[0], "../2.jpg": images[1]})
    data = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(data[: len(data) // 2])
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    folder = tmp_path / "all"
    folder.mkdir()
    for name in ("a.tar.gz", "cut.tgz", "bad.zip"):
        os.rename(tmp_path / name, folder / name)
    spec = parse_source(str(folder))
    assert spec.kind == "webdataset"
    reasons = by_reason(iter_records(spec))
    assert [r.source_id for r in reasons[None]] == ["1"]  # the whole archive's good member
    assert "leaves the archive" in reasons["unsafe_member"][0].reject_detail
    assert sorted(r.source_id for r in reasons["bad_archive"]) == ["bad.zip", "cut.tgz"]
    assert [r.source_id for r in reasons["duplicate_id"]] == ["1"]  # cut.tgz's readable first member


def test_zip_member_written_stored_and_deflated_round_trip(images, tmp_path):
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2):
        path = tmp_path / f"m{method}.zip"
        write_zip(str(path), {"7.png": images[3]}, method)
        (rec,) = iter_records(parse_source(str(path)))
        assert read_location(rec.location) == images[3]


def test_hfutils_index_is_one_small_get_per_tar_on_a_store(s3, images, tmp_path):  # noqa: F811
    """On object storage the index replaces the header walk: one GET of the index, two 512-byte
    ranged GETs checking it against the tar, instead of one GET per member header."""
    import boto3
    from hfutils.index.make import tar_create_index

    from curation.storage import SourceStorage

    from .test_object_storage import BUCKET

    many = {f"{i}.jpg": images[i % len(images)] for i in range(1, 41)}
    for name, indexed in (("plain", False), ("indexed", True)):
        tar = tmp_path / name / "0000.tar"
        write_tar(str(tar), many)
        if indexed:
            tar_create_index(str(tar), silent=True)
        for f in sorted(os.listdir(tmp_path / name)):
            boto3.client("s3").upload_file(str(tmp_path / name / f), BUCKET, f"idx/{name}/{f}")
    gets = {}
    for name in ("plain", "indexed"):
        before = open(s3["log"]).read().count("\n")
        url = f"s3://{BUCKET}/idx/{name}/0000.tar"
        listing = list_archive("d", url, f"s3://{BUCKET}/idx/{name}", SourceStorage())
        assert [m.name for m in listing.members] == list(many) and not listing.notes
        lines = open(s3["log"]).read().splitlines()[before:]
        gets[name] = [x for x in lines if "GET /" in x and f"/idx/{name}/" in x]
        assert read_location(listing.members[-1].location, storage=SourceStorage()) == many["40.jpg"]
    tar_gets = [x for x in gets["indexed"] if "0000.tar" in x]
    assert len([x for x in gets["indexed"] if "0000.json" in x]) == 1 and len(tar_gets) <= 2, gets["indexed"]
    assert len([x for x in gets["plain"] if "0000.tar" in x]) >= len(many), len(gets["plain"])


def test_zip_and_tar_gz_on_a_store_are_listed_and_read_in_place(s3, images, tmp_path):  # noqa: F811
    """A .zip (its central directory by ranged reads) and a .tar.gz (one streamed read) in a bucket:
    every member listed, an unsafe one a reject row, and the bytes read back exact."""
    import boto3

    from curation.storage import SourceStorage

    from .test_object_storage import BUCKET

    members = {"1.jpg": images[0], "2.png": images[3], "../out.jpg": images[1]}
    write_zip(str(tmp_path / "a.zip"), members)
    write_tgz(str(tmp_path / "b.tar.gz"), members)
    for name in ("a.zip", "b.tar.gz"):
        boto3.client("s3").upload_file(str(tmp_path / name), BUCKET, f"arch/{name}")
        url = f"s3://{BUCKET}/arch/{name}"
        listing = list_archive("d", url, f"s3://{BUCKET}/arch", SourceStorage())
        assert sorted(m.name for m in listing.members) == ["1.jpg", "2.png"], name
        assert [r.reject_reason for r in listing.problems] == ["unsafe_member"], name
        for member in listing.members:
            assert read_location(member.location, storage=SourceStorage()) == members[member.name], name
