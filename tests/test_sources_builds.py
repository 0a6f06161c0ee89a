"""The dumps of issue 23 built end to end through the CLI on the session's Ray: the 6-image sidecar
tar keeps all 6, a tag-string parquet applies a banned tag, a rating filter over a dump without
ratings is refused before the scan, and a dataset built from two older builds (both with a
``danbooru`` source) gives their tags and ids back under distinct keys; ``inspect`` and ``audit``
on the same files."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from .dumps import hf_row, kblueleaf_db, write_parquet, write_tar, write_tgz, write_zip
from .helpers import cli, write_config

COLOURFUL = ["style2paints_004.jpg", "style2paints_005.jpg", "style2paints_009.jpg", "style2paints_012.jpg",
             "style2paints_017.jpg", "danbooregion_007.png", "style2paints_021.png", "style2paints_014.jpg",
             "style2paints_001.jpg", "style2paints_002.jpg", "style2paints_003.jpg"]  # fmt: skip
# one more image per layout built end to end (indexes into MORE)
MORE = ["style2paints_006.jpg", "style2paints_007.jpg", "style2paints_010.jpg", "style2paints_011.jpg",
        "style2paints_013.jpg", "style2paints_015.jpg", "style2paints_019.jpg", "style2paints_020.jpg"]  # fmt: skip
CONFIG = "[shards]\nsamples_per_shard = 4\n[dedup]\nradius = 0\n"


def manifest(out: str) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()}


def rejects(out: str) -> dict[str, str]:
    return {r["key"]: r["reason"] for r in pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()}


@pytest.fixture(scope="module")
def dumps(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("dumps")
    data = [open(os.path.join(corpus, n), "rb").read() for n in COLOURFUL]
    ext = lambda i: COLOURFUL[i].rsplit(".", 1)[1]  # noqa: E731
    # A: the tar: 6 images, 3 with a Danbooru .json beside them, line drawings a linepairs
    # OUT would hold, and the parquet metadata of the dump
    members = {}
    for i in range(6):
        members[f"{100 + i}.{ext(i)}"] = data[i]
        if i < 3:
            members[f"{100 + i}.json"] = json.dumps({"id": 100 + i, "rating": "q"}).encode()
        members[f"{100 + i}.lineart.xdog.png"] = data[0]
    write_tar(str(root / "a" / "images" / "0000.tar"), members)
    write_parquet(str(root / "a" / "metadata.parquet"),
                  [hf_row(100 + i, tag_string_character=f"char_{i}", caption=None) for i in range(6)])  # fmt: skip
    # B: a parquet whose tags are one space-separated string (several HF dumps)
    tags = ["1girl solo long_hair smile looking_at_viewer", "1girl monochrome solo smile sky",
            "1boy solo short_hair smile outdoors"]  # fmt: skip
    write_parquet(str(root / "b" / "meta.parquet"),
                  [{"id": 200 + i, "rating": "g", "tags": t} for i, t in enumerate(tags)])  # fmt: skip
    write_tar(
        str(root / "b" / "images" / "0000.tar"), {f"{200 + i}.{ext(8 + i)}": data[8 + i] for i in range(3)}
    )
    # C: another danbooru dump sharing post 100's image with A (the same post in two older builds)
    write_parquet(str(root / "c" / "metadata.parquet"), [hf_row(100), hf_row(300)])
    write_tar(str(root / "c" / "images" / "0000.tar"), {f"100.{ext(0)}": data[0], f"300.{ext(6)}": data[6]})
    # D: a kohya folder: captions with prose, no tag table
    (root / "d").mkdir()
    shutil.copy(os.path.join(corpus, COLOURFUL[7]), root / "d" / "one.jpg")
    (root / "d" / "one.txt").write_text("1girl, hatsune miku, a girl singing on a stage.\n")
    more = [open(os.path.join(corpus, n), "rb").read() for n in MORE]
    tagged = dict(tag_string_general="1girl solo smile outdoors sky", rating="g")
    # E: KBlueLeaf's SQLite database beside nyanko7-style archives (.tar, and a .zip for the second)
    kblueleaf_db(str(root / "e" / "danbooru2023.db"),
                 [(400, 0, "jpg", {"general": ["1girl", "solo", "smile", "sky", "tree"], "character": ["c_400"]}),
                  (401, 1, "jpg", {"general": ["1boy", "solo", "smile", "sky", "tree"]})])  # fmt: skip
    write_tar(str(root / "e" / "original" / "data-0400.tar"), {"400.jpg": more[0]})
    write_zip(str(root / "e" / "original" / "data-0401.zip"), {"401.jpg": more[1]})
    # F: a DuckDB file with the Danbooru columns, its images in a .tar.gz
    import duckdb

    (root / "f").mkdir()
    con = duckdb.connect(str(root / "f" / "meta.duckdb"))
    con.execute(
        "CREATE TABLE posts (id BIGINT, rating VARCHAR, tag_string_general VARCHAR, file_ext VARCHAR)"
    )
    con.execute("INSERT INTO posts VALUES (500, 'g', '1girl solo smile sky tree', 'jpg')")
    con.close()
    write_tgz(str(root / "f" / "images.tar.gz"), {"500.jpg": more[2]})
    # G: WebDataset shards (tar.gz) with Danbooru post JSON beside each image, no table
    write_tgz(str(root / "g" / "shard-000000.tar.gz"),
              {"600.jpg": more[3], "600.json": json.dumps({"id": 600, **tagged}).encode(),
               "601.jpg": more[4], "601.json": json.dumps({"id": 601, **tagged}).encode()})  # fmt: skip
    # H: parquet with the images inside, as HF datasets writes it
    import datasets

    (root / "h" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(
        {"image": [{"bytes": more[5], "path": "a.jpg"}, {"bytes": more[6], "path": "b.jpg"}],
         "id": [700, 701], "rating": ["g", "s"], "tags": ["1girl solo smile sky tree", "1girl solo hat sky tree"]}
    ).cast_column("image", datasets.Image()).to_parquet(str(root / "h" / "data" / "train-00000-of-00001.parquet"))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def first_build(dumps, ray_cluster, tmp_path_factory):
    """OUT1: danbooru = the sidecar tar dump (A), tagstr = the tag-string parquet (B), art = D, and
    one source of every other layout (E-H)."""
    tmp = tmp_path_factory.mktemp("b1")
    cfg = write_config(str(tmp / "cfg.toml"), CONFIG)
    out = str(tmp / "out1")
    res = cli("build", f"danbooru={dumps / 'a'}", f"tagstr={dumps / 'b'}", f"art={dumps / 'd'}",
              f"kb={dumps / 'e'}", f"duck={dumps / 'f'}", f"wds={dumps / 'g'}", f"hfimg={dumps / 'h'}",
              "--out", out, "--config", cfg, "-q", address=ray_cluster)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_sidecar_tar_keeps_all_six_and_tag_string_bans(first_build):
    out, res = first_build
    rows, rej = manifest(out), rejects(out)
    assert sorted(k for k in rows if k.startswith("danbooru_")) == [f"danbooru_{100 + i}" for i in range(6)]
    assert (
        "member(s) are neither images nor their metadata" in res.stderr
        and "6 *.lineart.xdog.png" in res.stderr
    )
    # the parquet row's rating (g) wins over the .json sidecar's (q), which the filters would reject
    assert rows["danbooru_100"]["rating"] == "g" and rows["danbooru_100"]["tags_character"] == ["char_0"]
    # the tag string is split: 'monochrome' is a banned tag (filters.banned_tags' default)
    assert rej == {"tagstr_201": "banned_tag"}
    assert rows["tagstr_200"]["tags_general"] == ["1girl", "solo", "long_hair", "smile", "looking_at_viewer"]
    # the folder's prose is kept verbatim beside its tags, in the manifest and the sample JSON
    (art,) = [r for k, r in rows.items() if k.startswith("art_")]
    assert art["caption"] == "a girl singing on a stage." and art["tags_general"] == ["1girl", "hatsune_miku"]
    assert art["uncategorised_tags"] == 2
    import tarfile

    with tarfile.open(os.path.join(out, art["shard"])) as tf:
        meta = json.load(tf.extractfile(f"{art['key']}.json"))
    assert meta["caption"] == "a girl singing on a stage."
    with tarfile.open(os.path.join(out, rows["danbooru_100"]["shard"])) as tf:
        assert json.load(tf.extractfile("danbooru_100.json"))["caption"] == ""  # never null


def test_every_layout_builds_end_to_end(first_build):
    """SQLite + .tar/.zip, DuckDB + .tar.gz, WebDataset .tar.gz, parquet images: read in place by the
    scan and again by materialize on the Ray workers, tags and ratings as their metadata says."""
    out, _ = first_build
    rows, rej = manifest(out), rejects(out)
    want = {"kb_400", "kb_401", "duck_500", "wds_600", "wds_601", "hfimg_700", "hfimg_701"}
    assert want <= set(rows), (sorted(want - set(rows)), rej)
    assert rows["kb_400"]["tags_character"] == ["c_400"] and rows["kb_401"]["rating"] == "s"
    assert rows["duck_500"]["tags_general"][0] == "1girl" and rows["wds_600"]["rating"] == "g"
    assert rows["hfimg_701"]["tags_general"] == ["1girl", "solo", "hat", "sky", "tree"]
    from sharding.verify import verify_build

    assert verify_build(out) == []


def test_rating_filter_without_a_rating_column_is_refused_before_the_scan(dumps, ray_cluster, tmp_path):
    src = tmp_path / "norating"
    write_parquet(str(src / "meta.parquet"), [{"id": 1, "tags": "1girl solo"}])
    shutil.copytree(dumps / "b" / "images", src / "images")
    out = tmp_path / "out"
    res = cli("build", str(src), "--out", str(out), address=ray_cluster)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("linepairs build: error")]
    assert "filters.ratings" in line and "meta.parquet: id, tags" in line
    assert not os.path.exists(out / "_state" / "records")  # not one record enumerated
    # every rating class kept: nothing reads the rating, so the same dump builds
    cfg = write_config(str(tmp_path / "all.toml"), CONFIG + '[filters]\nratings = ["general", "safe", '
                       '"sensitive", "questionable", "explicit", "unrated"]\nmin_tags = 0\n')  # fmt: skip
    res = cli("build", str(src), "--out", str(tmp_path / "out2"), "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-2000:]


def test_two_older_builds_as_sources_give_tags_and_ids_back(dumps, first_build, ray_cluster, tmp_path):
    out1, _ = first_build
    cfg = write_config(str(tmp_path / "cfg.toml"), CONFIG)
    out2 = str(tmp_path / "out2")
    res = cli("build", str(dumps / "c"), "--out", out2, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr[-2000:]
    old1, old2 = manifest(out1), manifest(out2)
    assert "danbooru_100" in old1 and "danbooru_100" in old2  # both older builds have a danbooru source
    out3 = str(tmp_path / "out3")
    res = cli("build", f"old1=linepairs:{out1}", f"old2={out2}", "--out", out3, "--config", cfg, "-q",
              address=ray_cluster)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    new, rej = manifest(out3), rejects(out3)
    assert set(new) | set(rej) == {f"old1_{k}" for k in old1} | {f"old2_{k}" for k in old2}
    for name, old in (("old1", old1), ("old2", old2)):
        for key, row in old.items():
            if f"{name}_{key}" not in new:
                continue
            got = new[f"{name}_{key}"]
            assert got["source"] == name and got["source_id"] == key  # the older key, its source name in it
            assert got["post_id"] == row["post_id"] and got["rating"] == row["rating"]
            assert all(
                got[f"tags_{c}"] == row[f"tags_{c}"]
                for c in ("general", "artist", "character", "copyright", "meta")
            )
            assert got["caption"] == row["caption"] and got["rating_era"] == row["rating_era"]
    # post 100 is in both older builds: the same picture, so one of the two is a duplicate
    both = {"old1_danbooru_100", "old2_danbooru_100"}
    assert len(both & set(new)) == 1 and rej[(both - set(new)).pop()] in ("exact_duplicate", "near_duplicate")


def test_inspect_shows_mapping_records_and_refusals(dumps, first_build, tmp_path):
    res = cli("inspect", str(dumps / "b"), "--limit", "3")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "source   danbooru (hf-tar:" in text and "meta.parquet: 3 rows" in text
    assert "tags                               tags                 space-separated tag string" in text
    assert "banned_tag: banned tag(s): monochrome" in text and text.count(" kept") == 2
    res = cli("inspect", f"old=linepairs:{first_build[0]}", "--json", "--limit", "2", "--no-pixels")
    report = json.loads(res.stdout)
    assert report["kind"] == "linepairs" and [r["key"] for r in report["records"]][0].startswith("old_")
    assert {m["field"] for m in report["mappings"][0]["mapped"]} >= {"key", "id", "tags.general", "caption"}
    src = tmp_path / "norating"
    write_parquet(str(src / "meta.parquet"), [{"id": 1, "tags": "1girl solo"}])
    shutil.copytree(dumps / "b" / "images", src / "images")
    res = cli("inspect", str(src))
    assert res.returncode == 1 and "REFUSED  source danbooru" in res.stdout and "Traceback" not in res.stderr
    res = cli("inspect", str(tmp_path / "missing"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "does not exist" in res.stderr


def test_audit_counts_tags_without_a_category(first_build):
    out, _ = first_build
    res = cli("audit", out, "--json", "--draws", "200")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    rows = manifest(out)
    assert report["uncategorised_tags"] == {
        "tags": sum(r["uncategorised_tags"] or 0 for r in rows.values()),
        "samples": sum(bool(r["uncategorised_tags"]) for r in rows.values()),
        "of_tags": sum(len(r["tags"]) for r in rows.values()),
    }
    assert (
        report["uncategorised_tags"]["tags"] >= 2
    )  # the folder caption's two tags (and tagstr's flat strings)
    res = cli("audit", out, "--draws", "200")
    assert "had no category (filed as general)" in res.stdout
