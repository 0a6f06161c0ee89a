"""Source readers on real records and real tar/parquet dumps, including hostile ones."""

from __future__ import annotations

import os
import tarfile

import pytest

from curation.fetch import read_location
from curation.sources import SourceError, iter_records, parse_source, source_from_table
from curation.sources.parquet_images import looks_like_parquet_images
from pipelines.config import ConfigError, load_config

from .dumps import SAMPLES, api_dump, gwern_dump, hf_row, write_parquet, write_tar


def records(spec):
    return list(iter_records(spec))


def by_reason(recs):
    out: dict[str | None, list] = {}
    for r in recs:
        out.setdefault(r.reject_reason, []).append(r)
    return out


def jpg_bytes(corpus: str, name: str = "style2paints_008.jpg") -> bytes:
    with open(os.path.join(corpus, name), "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------- Danbooru metadata forms


def test_api_2020_records_old_era_and_tag_categories(shared, corpus, tmp_path):
    root, posts = api_dump(
        str(tmp_path / "api"), shared, {4018204: os.path.join(corpus, "style2paints_021.png")}
    )
    recs = records(parse_source(root))
    assert len(recs) == len(posts) == 10
    found = [r for r in recs if r.reject_reason is None]
    assert [r.post_id for r in found] == [4018204]
    rec = found[0]
    # The 2020 capture carries 2020-only keys: its 's' is the old "safe".
    assert (rec.rating, rec.rating_era) == ("s", "old")
    post = next(p for p in posts if p["id"] == 4018204)
    assert rec.tags["general"] == post["tag_string_general"].split()
    assert rec.tags["artist"] == post["tag_string_artist"].split()
    assert rec.fav_count == post["fav_count"] and rec.score == post["score"]
    assert {r.reject_reason for r in recs if r is not rec} == {"missing_file"}


def test_api_2023_animated_records_are_new_era_and_unsupported(shared, tmp_path):
    src = os.path.join(shared, SAMPLES, "api_posts_2023_media_asset_artanalyzer.jsonl")
    recs = records(parse_source(src, images=str(tmp_path)))
    assert [r.post_id for r in recs] == [2552401, 6285839]
    assert all(
        r.reject_reason == "unsupported_format" and r.rating_era == "new" and r.rating == "g" for r in recs
    )


def test_gwern_record_strings_and_tag_list(shared, corpus, tmp_path):
    root = gwern_dump(str(tmp_path / "gwern"), shared, os.path.join(corpus, "style2paints_004.jpg"))
    spec = parse_source(root)
    assert spec.kind == "gwern"
    (rec,) = records(spec)
    assert rec.reject_reason is None and rec.post_id == 263162
    assert (rec.width, rec.height, rec.score, rec.fav_count) == (797, 794, 1.0, 3)
    assert (rec.rating, rec.rating_era) == ("s", "old")
    assert rec.tags["artist"] == ["kakinouchi_narumi"]
    assert "vampire_princess_miyu" in rec.tags["copyright"] and len(rec.tags["character"]) == 2
    assert rec.location.endswith(os.path.join("original", "0162", "263162.jpg"))


# ---------------------------------------------------------------- HF tar + parquet


@pytest.fixture
def hostile_dump(corpus, tmp_path):
    """A dump with good rows and every kind of trouble the issue lists."""
    root = tmp_path / "hf"
    img = jpg_bytes(corpus)
    # ids as text in this file (a wrong type Danbooru's own dumps do not use), one of them path-like
    rows = [
        hf_row("1000", tag_string_general="1girl <b>&amp;\"quoted\" 'x' \U0001f600 smile a b c"),
        hf_row("1001"),
        hf_row("1002"),  # listed, absent from the tar
        hf_row("../../etc/passwd"),
        hf_row("1003", image_width=-5),
        hf_row("1001"),  # duplicate id
        hf_row("1004", rating=None, score=None, fav_count=None, tag_string_general=None),
        hf_row("1005", ext="mp4"),
        hf_row("1007", rating="z"),
    ]
    write_parquet(str(root / "metadata.parquet"), rows)
    # a second file in KBlueLeaf's style: numeric ratings 0..3
    write_parquet(str(root / "metadata_2.parquet"), [hf_row(1006, rating=3)])
    write_tar(
        str(root / "images" / "0000.tar"),
        {"1000.jpg": img, "1001.jpg": img, "1004.png": img, "1005.mp4": b"not a video", "1006.jpg": img,
         "1007.jpg": img, "2000.jpg": img, "../x.jpg": img, "/abs.jpg": img},
        symlinks={"1999.jpg": "/etc/passwd"},
    )  # fmt: skip
    write_tar(str(root / "images" / "0001.tar"), {"sub/1001.webp": img, "notes.txt": b"hello"})
    return root, img


def test_hf_tar_accounts_for_every_row_and_member(hostile_dump, tmp_path):
    root, img = hostile_dump
    spec = parse_source(str(root))
    assert spec.kind == "hf-tar" and spec.name == "danbooru"
    notes: list[str] = []
    recs = list(iter_records(spec, notes=notes.append))
    reasons = by_reason(recs)
    kept = {r.source_id: r for r in reasons[None]}
    assert set(kept) == {"1000", "1001", "1006"}
    # fail closed: a missing rating and an unknown letter are rejects, never "unrated" (their members count)
    assert sorted(r.source_id for r in reasons["bad_rating"]) == ["1004", "1007"]
    assert "'z'" in next(r.reject_detail for r in reasons["bad_rating"] if r.source_id == "1007")
    assert {r.source_id for r in reasons["missing_file"]} == {"1002"}
    assert len(reasons["bad_metadata"]) == 2  # the path-like id and the negative width
    assert any("etc/passwd" in r.reject_detail for r in reasons["bad_metadata"])
    assert [r.source_id for r in reasons["unsupported_format"]] == ["1005"]
    # the repeated row and the repeated member (second tar) are both flagged
    assert sorted(r.source_id for r in reasons["duplicate_id"]) == ["1001", "images/0001.tar:sub/1001.webp"]
    unsafe = sorted(r.reject_detail for r in reasons["unsafe_member"])
    assert len(unsafe) == 3 and any("link" in d for d in unsafe) and any("../x.jpg" in d for d in unsafe)
    assert any("/abs.jpg" in d for d in unsafe)
    assert sorted(r.source_id for r in reasons["no_metadata"]) == ["2000"]
    # notes.txt is metadata (a caption file) of no image: counted and reported once, not a reject
    assert notes == ["1 member(s) are neither images nor their metadata, skipped: 1 *.txt without an image"]
    # 10 rows + 11 image members - 3 members claimed by kept rows - 3 claimed by rows' rejects (mp4, ratings)
    assert len(recs) == 10 + 11 - 6
    # tags survive byte for byte, ratings keep their era
    assert '<b>&amp;"quoted"' in kept["1000"].tags["general"] and "\U0001f600" in kept["1000"].tags["general"]
    assert (kept["1006"].rating, kept["1006"].rating_era) == ("e", "new")
    # images are read in place, byte-exact
    assert read_location(kept["1000"].location) == img
    assert kept["1000"].location.startswith("tar://")


def test_hf_tar_never_writes_outside(hostile_dump, tmp_path):
    root, _ = hostile_dump
    before = sorted(os.listdir(tmp_path))
    for rec in records(parse_source(str(root))):
        if rec.location:
            read_location(rec.location)
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path / "x.jpg").exists() and not (root / "images" / "x.jpg").exists()


def test_parquet_columns_extra_missing_and_aliases(corpus, tmp_path):
    img = jpg_bytes(corpus)
    # extra columns are ignored; width/height (another script's names) map onto image_width/height
    write_parquet(str(tmp_path / "a" / "meta.parquet"), [{"id": 7, "width": 640, "height": 480, "rating": "s",
                                                          "tags": ["a", "b"], "something_else": [1, 2]}])  # fmt: skip
    write_tar(str(tmp_path / "a" / "images" / "0007.tar"), {"7.jpg": img})
    (rec,) = records(parse_source(str(tmp_path / "a")))
    assert (rec.width, rec.height, rec.rating, rec.rating_era) == (640, 480, "s", "new")
    assert rec.tags["general"] == ["a", "b"] and rec.reject_reason is None
    # without an id column the dump cannot be joined: a clear error naming the file and its columns
    write_parquet(str(tmp_path / "b" / "meta.parquet"), [{"post": 7, "rating": "g"}])
    write_tar(str(tmp_path / "b" / "images" / "0007.tar"), {"7.jpg": img})
    with pytest.raises(SourceError, match="no id column.*post, rating"):
        records(parse_source(str(tmp_path / "b")))
    # a parquet that is not parquet
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "meta.parquet").write_bytes(b"PAR1 nonsense")
    write_tar(str(tmp_path / "c" / "x.tar"), {"7.jpg": img})
    assert not looks_like_parquet_images(str(tmp_path / "c"))  # its TableError is "not this kind"
    with pytest.raises(SourceError, match="cannot read parquet"):
        records(parse_source(str(tmp_path / "c")))


def test_truncated_tar_is_a_bad_archive_and_keeps_earlier_members(corpus, tmp_path):
    img = jpg_bytes(corpus)
    write_parquet(str(tmp_path / "meta.parquet"), [hf_row(1), hf_row(2)])
    tar = tmp_path / "images" / "0000.tar"
    write_tar(str(tar), {"1.jpg": img, "2.jpg": img * 20})
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])  # cut inside the second member
    recs = records(parse_source(str(tmp_path)))
    reasons = by_reason(recs)
    assert [r.source_id for r in reasons[None]] == ["1"]
    assert [r.source_id for r in reasons["missing_file"]] == ["2"]
    # the cut member, and the archive itself (tarfile stops at the missing end-of-archive blocks)
    faults = {r.source_id: r.reject_detail for r in reasons["bad_archive"]}
    assert set(faults) == {"images/0000.tar:2.jpg", "images/0000.tar"}
    assert "cut off" in faults["images/0000.tar:2.jpg"]


def test_read_location_rejects_bad_locations(tmp_path):
    with pytest.raises(OSError):
        read_location("tar://" + str(tmp_path / "nope.tar") + "#0:10:1.jpg")
    with pytest.raises(OSError, match="malformed"):
        read_location("tar://whatever")
    tar = tmp_path / "t.tar"
    write_tar(str(tar), {"1.jpg": b"abc"})
    with tarfile.open(tar) as tf:
        info = tf.getmember("1.jpg")
    loc = f"tar://{tar}#{info.offset_data}:{info.size + 10**6}:1.jpg"
    with pytest.raises(OSError, match="truncated"):
        read_location(loc)


# ---------------------------------------------------------------- naming, shares, config tables


def test_source_tables_with_share_and_era(tmp_path, corpus):
    (tmp_path / "imgs").mkdir()
    spec = source_from_table({"name": "fan-art", "path": "imgs", "share": 0.25, "era": "old"}, str(tmp_path))
    assert (spec.name, spec.kind, spec.share, spec.era) == ("fan-art", "folder", 0.25, "old")
    assert spec.path == str(tmp_path / "imgs")
    for bad, msg in (({"path": "imgs", "share": 2}, "share"), ({"path": "imgs", "era": "medieval"}, "era"),
                     ({"path": "imgs", "colour": "red"}, "unknown key"), ({"name": "x"}, "path"),
                     ({"path": "imgs", "kind": "ftp"}, "kind")):  # fmt: skip
        with pytest.raises(SourceError, match=msg):
            source_from_table(bad, str(tmp_path))
    # the CLI form still works, and keeps share/era unset
    cli = parse_source(f"fan-art=folder:{tmp_path / 'imgs'}")
    assert (cli.name, cli.share, cli.era) == ("fan-art", None, None)


def test_config_sources_section_resolves_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    cfg_path = tmp_path / "build.toml"
    cfg_path.write_text(
        '[[sources]]\nname = "a"\npath = "imgs"\nshare = 0.5\n\n[filters]\nratings = ["general"]\n'
    )
    cfg = load_config(str(cfg_path))
    assert cfg.sources[0]["path"] == str(tmp_path / "imgs") and cfg.filters.ratings == ("general",)
    cfg_path.write_text('[[sources]]\npath = "missing"\n')
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(cfg_path))


def test_an_hf_hub_cache_snapshot_is_read_through_its_blob_links(corpus, tmp_path):
    """``snapshot_download`` keeps files as links from snapshots/REV/ into the repo's blobs/: that is
    the layout, read in place; a link out of the repo folder is still refused."""
    img = jpg_bytes(corpus)
    repo = tmp_path / "hub" / "datasets--deepghs--danbooru2024"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abcd"
    write_parquet(str(blobs / "b1"), [hf_row(1000), hf_row(1001)])
    write_tar(str(blobs / "b2"), {"1000.jpg": img})
    write_tar(str(tmp_path / "elsewhere" / "0001.tar"), {"1001.jpg": img})
    (snap / "images").mkdir(parents=True)
    os.symlink("../../blobs/b1", snap / "metadata.parquet")
    os.symlink("../../../blobs/b2", snap / "images" / "0000.tar")
    os.symlink(str(tmp_path / "elsewhere" / "0001.tar"), snap / "images" / "0001.tar")
    reasons = by_reason(records(parse_source(str(snap))))
    assert [r.source_id for r in reasons.pop(None)] == ["1000"]
    assert (
        read_location(next(r for r in records(parse_source(str(snap))) if r.source_id == "1000").location)
        == img
    )
    outside = [r for rs in reasons.values() for r in rs if r.reject_reason == "outside_source"]
    assert outside and all("elsewhere" in r.reject_detail for r in outside)
    assert {r.source_id for rs in reasons.values() for r in rs} >= {"1001"}  # its image is never read
