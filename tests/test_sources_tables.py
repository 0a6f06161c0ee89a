"""Metadata tables through the one mapping per dump kind: parquet (tag strings, tag lists, wrong
shapes), SQLite and DuckDB laid out like KBlueLeaf's, Jakaline's and Jannchie's databases, parquet
with the images inside (written by HF ``datasets`` itself), and the check that refuses, before the
scan, a source whose metadata maps nothing to a field the filters read."""

from __future__ import annotations

import os
import sqlite3

import pytest

from curation.fetch import read_location
from curation.filters import FilterConfig, needed_fields
from curation.sources import SourceError, check_metadata, iter_records, parse_source
from curation.sources.database import DbSource

from .dumps import hf_row, kblueleaf_db, write_parquet, write_tar

ALL_RATINGS = ("general", "safe", "sensitive", "questionable", "explicit", "unrated")


@pytest.fixture(scope="module")
def jpg(corpus) -> bytes:
    with open(os.path.join(corpus, "style2paints_008.jpg"), "rb") as fh:
        return fh.read()


def test_tag_string_and_list_columns_are_read_by_their_shape(jpg, tmp_path):
    write_tar(str(tmp_path / "images" / "0000.tar"), {"1.jpg": jpg, "2.jpg": jpg, "3.jpg": jpg})
    # danbooru2024-style tag string, space-separated, in a column named like the HF scripts' "tags"
    write_parquet(str(tmp_path / "a.parquet"), [{"id": 1, "rating": "g", "tags": "1girl monochrome solo"}])
    write_parquet(str(tmp_path / "b.parquet"), [{"id": 2, "rating": "g", "tags": ["1girl", "blue hair"]}])
    write_parquet(str(tmp_path / "c.parquet"), [{"id": 3, "rating": "g", "tags": "1girl, long hair, smile"}])
    recs = {r.source_id: r for r in iter_records(parse_source(str(tmp_path)))}
    assert recs["1"].tags["general"] == ["1girl", "monochrome", "solo"]
    assert recs["2"].tags["general"] == ["1girl", "blue_hair"]
    assert recs["3"].tags["general"] == ["1girl", "long_hair", "smile"]  # a caption-style list
    assert all(
        r.uncategorised_tags == 3 - (k == "2") for k, r in recs.items()
    )  # a flat column has no categories


def test_a_column_of_the_wrong_shape_is_refused_naming_it(jpg, tmp_path):
    write_tar(str(tmp_path / "images" / "0000.tar"), {"1.jpg": jpg})
    write_parquet(str(tmp_path / "m.parquet"), [{"id": 1, "rating": "g", "tags": [4, 5]}])
    with pytest.raises(SourceError) as err:
        list(iter_records(parse_source(str(tmp_path))))
    msg = str(err.value)
    assert "'tags'" in msg and "m.parquet" in msg and "[4, 5]" in msg and "\n" not in msg
    write_parquet(str(tmp_path / "m.parquet"), [{"id": 1, "rating": ["g"], "tag_string": "a"}])
    with pytest.raises(
        SourceError, match=r"column 'rating' of m.parquet holds list<string> \(e.g. \[\"g\"\]\)"
    ):
        list(iter_records(parse_source(str(tmp_path))))


def test_fields_the_filters_read_must_map_from_something(jpg, tmp_path):
    write_tar(str(tmp_path / "images" / "0000.tar"), {"1.jpg": jpg})
    write_parquet(str(tmp_path / "m.parquet"), [{"id": 1, "tags": "1girl"}])
    spec = parse_source(str(tmp_path))
    with pytest.raises(SourceError) as err:
        check_metadata([spec], FilterConfig(), predicted=False)
    assert "filters.ratings" in str(err.value) and "m.parquet: id, tags" in str(err.value)
    # every class kept: nothing reads the rating; a tagger would predict it
    check_metadata([spec], FilterConfig(ratings=ALL_RATINGS), predicted=False)
    check_metadata([spec], FilterConfig(), predicted=True)
    assert needed_fields(FilterConfig(ratings=ALL_RATINGS, banned_tags=(), min_tags=0)) == {}
    # unrated posts of a table without ratings are unrated, not bad_rating (the check allowed it)
    (rec,) = iter_records(spec)
    assert rec.reject_reason is None and rec.rating is None
    # tags: no tag column and no sidecar: refused; a .json sidecar in the archives gives them
    write_parquet(str(tmp_path / "m.parquet"), [{"id": 1, "rating": "g"}])
    with pytest.raises(SourceError, match="filters.banned_tags, filters.min_tags read the tags"):
        check_metadata([spec], FilterConfig(), predicted=False)
    write_tar(str(tmp_path / "images" / "0000.tar"), {"1.jpg": jpg, "1.json": b'{"tags": ["1girl"]}'})
    check_metadata([spec], FilterConfig(), predicted=False)
    (rec,) = iter_records(spec)
    assert rec.tags["general"] == ["1girl"] and rec.rating == "g"


def test_api_json_without_ratings_is_refused_before_the_scan(tmp_path):
    (tmp_path / "posts.jsonl").write_text('{"id": 1, "tag_string": "a b"}\n{"id": 2, "tag_string": "c"}\n')
    with pytest.raises(SourceError, match="the first 2 posts of posts.jsonl"):
        check_metadata([parse_source(str(tmp_path))], FilterConfig(), predicted=False)


KB_POSTS = [
    (1, 0, "jpg", {"general": ["1girl", "solo"], "character": ["hatsune_miku"], "copyright": ["vocaloid"],
                   "artist": ["someone"], "meta": ["highres"]}),
    (2, 3, "png", {"general": ["1girl", "nude"]}),
    (5, 1, "jpg", {"general": ["monochrome", "1boy"]}),
    (7, 2, "mp4", {"meta": ["video"]}),
]  # fmt: skip


def test_kblueleaf_sqlite_relation_and_enums(jpg, tmp_path):
    db = kblueleaf_db(str(tmp_path / "danbooru2023.db"), KB_POSTS)
    # nyanko7's danbooru2023 layout beside it: original/data-0NNN.tar, members {id}.{ext}
    write_tar(str(tmp_path / "original" / "data-0001.tar"), {"1.jpg": jpg})
    write_tar(str(tmp_path / "original" / "data-0005.tar"), {"5.jpg": jpg, "7.mp4": b"not a video"})
    spec = parse_source(str(tmp_path))
    assert spec.kind == "sqlite" and spec.name == "danbooru"
    recs = {r.source_id: r for r in iter_records(spec)}
    one = recs["1"]
    assert (one.rating, one.rating_era) == ("g", "new")  # 0 = general
    assert one.tags == {"general": ["1girl", "solo"], "artist": ["someone"], "character": ["hatsune_miku"],
                        "copyright": ["vocaloid"], "meta": ["highres"]}  # fmt: skip
    assert recs["2"].rating == "e" and recs["2"].reject_reason == "missing_file"
    assert recs["5"].rating == "s" and recs["5"].tags["general"] == ["monochrome", "1boy"]
    assert recs["7"].reject_reason == "unsupported_format"
    assert read_location(one.location) == jpg
    # the mapping says where the tags came from
    src = DbSource(db, "sqlite")
    assert src.table == "post" and src.tag_mode == "relation"
    assert any("posttagrelation" in c for c, f, _ in src.mapping.extra if f == "tags")
    src.close()


def _one_table_db(path, create: str, insert: str, rows: list[tuple] | None = None) -> None:
    """A SQLite file (its folder made) of one table: ``create``, then ``insert`` once per row of
    parameters (once, without, by default)."""
    path.parent.mkdir()
    con = sqlite3.connect(path)
    con.execute(create)
    con.executemany(insert, rows or [()])
    con.commit()
    con.close()


def test_kblueleaf_first_release_tag_lists_in_base36(jpg, tmp_path):
    con = sqlite3.connect(tmp_path / "old.db")
    con.executescript(
        'CREATE TABLE post ("id" INTEGER NOT NULL PRIMARY KEY, "rating" INTEGER, "file_ext" VARCHAR(255), '
        '"tag_list" TEXT, "tag_list_general" TEXT, "tag_list_character" TEXT);'
        'CREATE TABLE tag ("id" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(255), "type" INTEGER, "popularity" INTEGER);'
    )
    con.executemany(
        "INSERT INTO tag VALUES (?, ?, ?, 1)",
        [(306675, "umamusume", 3), (40, "1girl", 0), (41, "tokai_teio", 2)],
    )
    # $<base36 id>#: 306675 is 6KMR (the example on the dataset card)
    con.execute("INSERT INTO post VALUES (1, 1, 'jpg', '$14#$15#$6KMR#', '$14#', '$15#')")
    con.execute("INSERT INTO post VALUES (2, 0, 'jpg', '$zz!#', '$zz!#', '')")
    con.commit()
    con.close()
    write_tar(str(tmp_path / "0.tar"), {"1.jpg": jpg, "2.jpg": jpg})
    recs = {r.source_id: r for r in iter_records(parse_source(f"sqlite:{tmp_path / 'old.db'}"))}
    assert recs["1"].tags["general"] == ["1girl"] and recs["1"].tags["character"] == ["tokai_teio"]
    assert recs["2"].reject_reason == "bad_metadata" and "base-36" in recs["2"].reject_detail


def test_jakaline_and_jannchie_flat_tables(jpg, tmp_path):
    # Jakaline's Danbooru2023_metadata: the API's columns in one table
    jak = tmp_path / "jak"
    _one_table_db(jak / "danbooru2023_metadata.db", "CREATE TABLE metadata (id INTEGER PRIMARY KEY, md5 TEXT, rating TEXT, image_width INTEGER, "
                "image_height INTEGER, file_ext TEXT, duration REAL, tag_string_general TEXT, tag_string_character TEXT, "
                "tag_string_copyright TEXT, tag_string_artist TEXT, tag_string_meta TEXT)",
                  "INSERT INTO metadata VALUES (9, 'ab', 's', 800, 900, 'jpg', NULL, '1girl solo', 'x_(y)', 'y', 'z', 'highres')")  # fmt: skip
    write_tar(str(jak / "data-0009.tar"), {"9.jpg": jpg})
    (rec,) = iter_records(parse_source(str(jak)))
    assert (
        rec.tags["character"] == ["x_(y)"] and rec.rating == "s" and rec.rating_era == "new" and rec.location
    )
    # Jannchie's danbooru_metadata: table posts, the API's names plus width/height/extension, 0/1 booleans
    jan = tmp_path / "jan"
    _one_table_db(jan / "danbooru_metadata.db", "CREATE TABLE posts (id INTEGER PRIMARY KEY, filename TEXT, extension TEXT, width INTEGER, "
                "height INTEGER, rating TEXT, image_width INTEGER, image_height INTEGER, tag_string TEXT, "
                "tag_string_general TEXT, file_ext TEXT, parent_id FLOAT, is_deleted INTEGER, is_banned INTEGER)",
                  "INSERT INTO posts VALUES (?, 'f', 'jpg', 10, 10, 'g', 800, 900, 'a b', ?, 'jpg', NULL, ?, 0)",
                  [(11, "a b", 0), (12, "c", 1)])  # fmt: skip
    write_tar(str(jan / "0.tar"), {"11.jpg": jpg, "12.jpg": jpg})
    one, two = iter_records(parse_source(str(jan)))
    assert (one.width, one.height) == (800, 900)  # image_width wins over width
    assert one.tags["general"] == ["a", "b"] and one.is_deleted is False and two.is_deleted is True


def test_duckdb_file_with_kblueleaf_tables(jpg, tmp_path):
    import duckdb

    kblueleaf_db(str(tmp_path / "src.db"), KB_POSTS)
    con = duckdb.connect(str(tmp_path / "danbooru2023.duckdb"))
    src = sqlite3.connect(tmp_path / "src.db")
    for table, cols in (("post", "id BIGINT, rating INTEGER, file_ext VARCHAR, image_width INTEGER, image_height INTEGER"),
                        ("tag", "id BIGINT, name VARCHAR, type INTEGER, popularity INTEGER"),
                        ("posttagrelation", "id BIGINT, post_id BIGINT, tag_id BIGINT")):  # fmt: skip
        con.execute(f"CREATE TABLE {table} ({cols})")
        names = [c.split()[0] for c in cols.split(", ")]
        rows = src.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall()
        con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(names))})", rows)
    con.close()
    src.close()
    os.remove(tmp_path / "src.db")
    write_tar(str(tmp_path / "images" / "data-0001.tar"), {"1.jpg": jpg})
    spec = parse_source(str(tmp_path))
    assert spec.kind == "duckdb"
    recs = {r.source_id: r for r in iter_records(spec)}
    assert recs["1"].tags["character"] == ["hatsune_miku"] and recs["1"].rating == "g" and recs["1"].location
    assert recs["5"].tags["general"] == ["monochrome", "1boy"] and recs["5"].reject_reason == "missing_file"


def test_parquet_with_embedded_images_written_by_hf_datasets(corpus, tmp_path):
    import datasets

    names = ["style2paints_004.jpg", "style2paints_021.png", "anime2sketch_001.jpg"]
    data = [open(os.path.join(corpus, n), "rb").read() for n in names]
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": n} for b, n in zip(data, names, strict=True)],
         "tags": ["1girl solo", "1boy monochrome", "scenery"], "rating": ["g", "s", "q"]}
    ).cast_column("image", datasets.Image())  # fmt: skip
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    spec = parse_source(str(tmp_path))
    assert spec.kind == "parquet-images"
    recs = list(iter_records(spec))
    assert [r.source_id for r in recs] == [f"data/train-00000-of-00001.parquet:{i}" for i in range(3)]
    assert [r.tags["general"] for r in recs] == [["1girl", "solo"], ["1boy", "monochrome"], ["scenery"]]
    assert [read_location(r.location) for r in reversed(recs)] == data[::-1]
    assert recs[0].location.startswith("parquet://")


def test_unknown_kind_prefix_is_named(tmp_path):
    with pytest.raises(SourceError, match="unknown source kind 'foo'.*known: folder"):
        parse_source(f"foo:{tmp_path}")
    with pytest.raises(SourceError, match="unknown source kind 'hf-tars'"):
        parse_source(f"d=hf-tars:{tmp_path}")
    assert parse_source(f"hf-tar:{tmp_path}").kind == "hf-tar"


def test_bad_metadata_rows_and_hostile_tags_never_end_the_stream(jpg, tmp_path):
    write_tar(str(tmp_path / "images" / "0000.tar"), {f"{i}.jpg": jpg for i in range(1, 5)})
    rows = [
        hf_row(1, tag_string_general="1girl nul\x00tag"),
        hf_row(2, tag_string_general="1girl  solo\u200b  solo"),
        hf_row(3, tag_string_general="x" * 300),
        hf_row(4, tag_string_general="esc\x1b[31mred"),
    ]
    write_parquet(str(tmp_path / "m.parquet"), rows)
    recs = {r.source_id: r for r in iter_records(parse_source(str(tmp_path)))}
    assert recs["1"].reject_reason == "bad_metadata" and "U+0000" in recs["1"].reject_detail
    assert recs["2"].reject_reason is None and recs["2"].tags["general"] == ["1girl", "solo"]
    assert recs["3"].reject_reason == "bad_metadata" and "300 characters" in recs["3"].reject_detail
    assert recs["4"].reject_reason == "bad_metadata" and "\\x1b" in recs["4"].reject_detail
    assert all(not any(r.tags.values()) for k, r in recs.items() if k != "2")  # no bad tag reaches a table


def test_inspect_peeks_a_database_without_reading_it_all(jpg, tmp_path):
    from curation.sources.inspect import inspect_source
    from pipelines.config import BuildConfig

    kblueleaf_db(str(tmp_path / "danbooru2023.db"), KB_POSTS)
    for n in range(6):  # the first rows' images are in the first archives; the rest is never listed
        write_tar(str(tmp_path / "original" / f"data-000{n}.tar"), {f"{n}.jpg": jpg})
    report = inspect_source(parse_source(str(tmp_path)), BuildConfig(), limit=2, max_archives=2, pixels=False)
    assert report.files[0] == {
        "what": "metadata",
        "path": "danbooru2023.db",
        "table": "post",
        "rows": 4,
        "tags": "relation",
    }
    assert report.files[1]["count"] == 6 and report.refused is None
    one, two = report.records
    assert one["tags"]["character"] == "hatsune_miku" and one["image"] == "original/data-0001.tar:1.jpg"
    assert one["verdict"]["status"] == "kept (metadata only)"
    # post 2's image is in none of the 2 archives read: said so, not called missing
    assert (
        two["verdict"]["reason"] == "missing_file"
        and "not in the 2 archive(s) read of 6" in two["verdict"]["detail"]
    )
