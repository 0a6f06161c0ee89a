"""The three foundation sources on real Danbooru records and real corpus images."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from curation.sources import SourceError, iter_records, parse_source

META = "danbooru_metadata_samples"


def _copy(corpus: str, name: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy(os.path.join(corpus, name), dest)


def test_folder_with_sidecars(corpus, tmp_path):
    _copy(corpus, "style2paints_004.jpg", str(tmp_path / "a" / "one.jpg"))
    _copy(corpus, "style2paints_005.jpg", str(tmp_path / "a" / "b" / "two.jpg"))
    (tmp_path / "a" / "one.txt").write_bytes("\ufeff1girl, solo,  long_hair ,\n smile, blue  hair".encode())
    (tmp_path / "a" / "notes.md").write_text("not an image")
    recs = list(iter_records(parse_source(str(tmp_path / "a"))))
    assert [r.source_id for r in recs] == ["one.jpg", "b/two.jpg"]  # a folder's files, then its subfolders
    # Danbooru's spelling: whitespace inside a tag becomes "_" (a tag string stays lossless)
    assert recs[0].tags["general"] == ["1girl", "solo", "long_hair", "smile", "blue_hair"]
    assert recs[1].tags["general"] == []
    assert recs[0].source == "a" and all(r.reject_reason is None for r in recs)
    assert "." not in recs[0].key and recs[0].key.startswith("a_one_jpg_")


def test_api_json_array_by_id_and_md5(shared, corpus, tmp_path):
    meta = os.path.join(shared, "corpus", META, "api_posts_2020_imgbrd-grabber.json")
    posts = json.load(open(meta))
    shutil.copy(meta, tmp_path / "posts.json")
    images = tmp_path / "images"
    # first post by id, second by md5, the rest absent
    _copy(corpus, "style2paints_004.jpg", str(images / f"{posts[0]['id']}.png"))
    _copy(corpus, "style2paints_005.jpg", str(images / "sub" / f"{posts[1]['md5']}.jpg"))
    recs = list(iter_records(parse_source(f"dan=danbooru-api:{tmp_path / 'posts.json'}")))
    assert len(recs) == len(posts) == 10
    assert recs[0].location.endswith(f"{posts[0]['id']}.png") and recs[0].reject_reason is None
    assert recs[1].location.endswith(f"{posts[1]['md5']}.jpg")
    assert {r.reject_reason for r in recs[2:]} == {"missing_file"}
    first = recs[0]
    assert first.post_id == 4018204 and first.rating == "s" and first.score == 1.0
    assert first.tags["character"] == ["eyjafjalla_(arknights)"] and "1girl" in first.tags["general"]
    assert first.tags["artist"] == ["chagara"] and first.key == "dan_4018204"


def test_api_jsonl_animated_posts_are_rejected(shared, tmp_path):
    meta = os.path.join(shared, "corpus", META, "api_posts_2023_media_asset_artanalyzer.jsonl")
    shutil.copy(meta, tmp_path / "posts.jsonl")
    (tmp_path / "posts.jsonl").open("a").write('not json at all\n{"id": "../../etc/passwd"}\n')
    recs = list(iter_records(parse_source(str(tmp_path))))
    reasons = [r.reject_reason for r in recs]
    assert reasons == ["unsupported_format", "unsupported_format", "bad_metadata", "bad_metadata"]
    assert recs[0].rating == "g" and recs[0].fav_count == 72


def test_gwern_layout_strings_and_tag_categories(shared, corpus, tmp_path):
    root = tmp_path / "danbooru2020"
    meta = os.path.join(shared, "corpus", META, "gwern_danbooru2017-2020_posts_record.jsonl")
    (root / "metadata").mkdir(parents=True)
    line = open(meta).read().strip()
    post = json.loads(line)
    other = dict(post, id="1000")  # same post under another id: only a 512px copy exists
    dup = dict(post)  # the same id again
    (root / "metadata" / "posts000000000000.json").write_text(
        "\n".join(json.dumps(p) for p in (post, other, dup)) + "\n"
    )
    _copy(corpus, "style2paints_004.jpg", str(root / "original" / "0162" / "263162.jpg"))
    _copy(corpus, "style2paints_005.jpg", str(root / "512px" / "0000" / "1000.jpg"))
    recs = list(iter_records(parse_source(str(root))))
    assert [r.source_id for r in recs] == ["263162", "1000", "263162"]
    assert recs[0].location.endswith("original/0162/263162.jpg") and recs[1].location.endswith(
        "512px/0000/1000.jpg"
    )
    assert recs[2].reject_reason == "duplicate_id"
    first = recs[0]
    assert first.post_id == 263162 and first.width == 797 and first.score == 1.0 and first.fav_count == 3
    assert first.tags["artist"] == ["kakinouchi_narumi"]
    assert first.tags["copyright"] == ["vampire_princess_miyu"]
    assert "larva_(vampire_princess_miyu)" in first.tags["character"]


def test_bad_source_arguments(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        parse_source(str(tmp_path / "nope"))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(SourceError, match="not .json"):
        parse_source(str(tmp_path / "x.csv"))
    with pytest.raises(SourceError, match="lowercase"):
        parse_source(f"Bad_Name={tmp_path}")
