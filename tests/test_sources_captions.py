"""Folder captions as people write them (kohya ``.txt`` / ``.caption``: tags, prose or both), tag
categories from a tag table (a real Danbooru tags export, a tagger's ``selected_tags.csv``), the one
tag hygiene, and the ``[sidecars]`` config."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from curation.sources import SourceError, iter_records, parse_source, with_sidecars
from curation.sources.sidecars import parse_caption
from curation.tags import TagProblem, clean_caption, clean_tag, clean_tags, read_tag_table
from pipelines.config import ConfigError, load_config

from .dumps import SAMPLES


@pytest.mark.parametrize(
    "text, tags, prose",
    [
        ("1girl, solo, long hair, smile", ["1girl", "solo", "long hair", "smile"], None),
        ("a girl standing in the rain", [], "a girl standing in the rain"),
        ("1girl, solo,\nA girl holding an umbrella, looking up at the sky.", ["1girl", "solo"],
         "A girl holding an umbrella, looking up at the sky."),
        ("hand on own chest, looking at viewer", ["hand on own chest", "looking at viewer"], None),
        ("smile, She waves!", ["smile"], "She waves!"),
        ("hatsune miku \\(vocaloid\\), 1girl", ["hatsune miku (vocaloid)", "1girl"], None),
        ("", [], None),
    ],
)  # fmt: skip
def test_tags_and_prose_are_told_apart(text, tags, prose):
    got, caption, missing = parse_caption(text)
    assert got["general"] == tags and caption == prose and missing == len(tags)


def test_a_tag_table_knows_long_tags_and_files_categories(shared, tmp_path):
    # a real Danbooru /tags.json export (category numbers 0, 3, 5)
    table = read_tag_table(os.path.join(shared, SAMPLES, "api_tags_2020_imgbrd-grabber.json"))
    assert table.categories["touhou"] == "copyright" and table.categories["photoshop_(medium)"] == "meta"
    got, caption, missing = parse_caption("touhou, blue eyes, photoshop (medium), wings", table)
    assert got["copyright"] == ["touhou"] and got["meta"] == ["photoshop (medium)"]
    assert got["general"] == ["blue eyes", "wings"] and missing == 1 and caption is None
    # a tagger's selected_tags.csv (tag_id,name,category,count; 9 = rating, not a category)
    path = tmp_path / "selected_tags.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        w.writerows([[9999999, "general", 9, 1], [1, "hand_on_own_chest_in_the_rain_at_night", 0, 5],
                     [2, "hatsune_miku", 4, 9]])  # fmt: skip
    table = read_tag_table(str(path))
    assert "general" not in table.categories  # the rating label is no tag
    got, caption, _ = parse_caption("hatsune miku, hand on own chest in the rain at night", table)
    # five words would be prose, but the table knows the tag
    assert got["character"] == ["hatsune miku"] and got["general"] == [
        "hand on own chest in the rain at night"
    ]
    assert caption is None


def test_folder_captions_read_through_the_source(corpus, tmp_path):
    folder = tmp_path / "kohya"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(os.path.join(corpus, "style2paints_004.jpg"), folder / f"{name}.jpg")
    (folder / "a.txt").write_text("1girl, hatsune miku, a girl singing on a stage.\n")
    (folder / "b.caption").write_text("solo, smile")  # kohya's default caption extension
    (folder / "c.txt").write_text("from txt")
    (folder / "c.caption").write_text("from caption")
    tags_csv = tmp_path / "tags.csv"
    tags_csv.write_text("hatsune_miku,4,100,\n1girl,0,900,\n")  # headerless: the a1111 tag-complete layout
    spec = with_sidecars(parse_source(str(folder)), (".caption", ".txt"), str(tags_csv))
    a, b, c = iter_records(spec)
    assert a.tags["character"] == ["hatsune_miku"] and a.tags["general"] == ["1girl"]
    assert a.caption == "a girl singing on a stage." and a.uncategorised_tags == 0
    assert b.tags["general"] == ["solo", "smile"] and b.uncategorised_tags == 2 and b.caption is None
    assert c.tags["general"] == ["from_caption"]  # the first extension of the setting wins
    (folder / "b.caption").write_text("Hatsune Miku, Solo")  # Danbooru's spelling is lower case
    b = next(r for r in iter_records(spec) if r.source_id == "b.jpg")
    assert b.tags["character"] == ["hatsune_miku"] and b.tags["general"] == ["solo"]
    # inspect names what the caption files map to
    from curation.sources.inspect import inspect_source
    from pipelines.config import BuildConfig

    report = inspect_source(spec, BuildConfig(), limit=1, pixels=False).to_dict()
    assert report["mappings"][0]["mapped"][0]["column"] == "NAME.caption"
    assert "categories from tags.csv" in report["mappings"][0]["mapped"][0]["how"]
    assert report["files"] == [{"what": "images", "count": 3}, {"what": "caption files", "count": 4}]
    plain = list(iter_records(parse_source(str(folder))))  # defaults: .txt first, no table
    assert plain[0].tags["general"] == ["1girl", "hatsune_miku"] and plain[0].uncategorised_tags == 2
    assert plain[2].tags["general"] == ["from_txt"]


def test_tag_hygiene_rules():
    assert clean_tag("  Blue \t Hair ") == "blue_hair"
    assert clean_tag("blue\u3000hair\u00a0ribbon") == "blue_hair_ribbon"  # ideographic and no-break spaces
    assert clean_tag("zero\u200bwidth\ufeff") == "zerowidth"
    assert clean_tag("\u202eevil") == "evil"  # a bidi override would reorder the audit page
    for bad in ("nul\x00", "esc\x1b[0m", "c1\x85", "lone\ud800"):
        with pytest.raises(TagProblem):
            clean_tag(bad)
    with pytest.raises(TagProblem, match="300 characters"):
        clean_tag("x" * 300)
    tags = clean_tags({"general": ["solo", "", "hatsune_miku", "solo", " "], "character": ["hatsune_miku"]})
    assert tags["general"] == ["solo"] and tags["character"] == ["hatsune_miku"]
    assert clean_caption("  one\r\n two\x00\u200b  ") == "one two" and clean_caption(" \n ") is None


def test_sidecars_config_is_checked_and_resolved(tmp_path):
    (tmp_path / "t.csv").write_text("name,category\nsolo,0\n")
    cfg_path = tmp_path / "build.toml"
    cfg_path.write_text('[sidecars]\ncaption_extensions = [".caption"]\ntag_table = "t.csv"\n')
    cfg = load_config(str(cfg_path))
    assert cfg.sidecars.caption_extensions == (".caption",) and cfg.sidecars.tag_table == str(
        tmp_path / "t.csv"
    )
    for text, msg in (('caption_extensions = ["txt"]', "not an extension"),
                      ('caption_extensions = [".png"]', "image or metadata"),
                      ('tag_table = "missing.csv"', "No such file"),
                      ('tag_table = "build.toml"', "no \\(name, category\\) row")):  # fmt: skip
        cfg_path.write_text(f"[sidecars]\n{text}\n")
        with pytest.raises(ConfigError, match=msg):
            load_config(str(cfg_path))
    with pytest.raises(SourceError, match="tag table"):
        with_sidecars(parse_source(str(tmp_path)), (".txt",), str(tmp_path / "nope.csv"))
