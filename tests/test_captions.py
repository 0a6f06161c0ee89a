"""The one caption rule (sharding/captions.py): order, meta dropped, spelling, kaomoji, prose, keep_tokens."""

import pytest

from sharding.captions import CaptionError, CaptionRule, caption, caption_of_row

TAGS = {
    "general": ["1girl", "long_hair", "^_^", "crane_(machine)"],
    "character": ["hatsune_miku"],
    "copyright": "vocaloid",  # a Danbooru tag string, as the sample JSON holds it
    "artist": [],
    "meta": ["highres", "commentary_request"],
}


def test_default_rule_orders_identity_first_drops_meta_and_writes_spaces():
    cap = caption(TAGS)
    assert cap.text == "hatsune miku, vocaloid, 1girl, long hair, ^_^, crane (machine)"
    assert cap.keep_tokens == 2 and cap.tags == 6


def test_underscores_kept_and_meta_asked_for():
    cap = caption(TAGS, CaptionRule.parse("general,meta", underscores=True))
    assert cap.text == "1girl, long_hair, ^_^, crane_(machine), highres, commentary_request"
    assert cap.keep_tokens == 0  # general first: nothing identity-like leads


def test_prose_follows_the_tags_verbatim_and_empty_is_empty():
    row = {"tags_general": ["rain"], "tags_character": None, "caption": "  a girl standing in the rain "}
    assert caption_of_row(row).text == "rain, a girl standing in the rain"
    assert caption({}).text == "" and caption({}).tags == 0
    assert caption({}, prose="just prose").text == "just prose"


def test_prose_line_breaks_become_one_line():
    # kohya reads a caption file's first line only; SimpleTuner splits lines into separate captions
    cap = caption({"general": ["rain"]}, prose="a girl\nstanding  in\r\nthe rain\n")
    assert cap.text == "rain, a girl standing in the rain" and "\n" not in cap.text


def test_a_tag_in_two_categories_is_written_once():
    assert caption({"character": ["miku"], "general": ["miku", "smile"]}).text == "miku, smile"


@pytest.mark.parametrize("order", ["character,nsfw", "general,general"])
def test_bad_orders_are_refused_by_name(order):
    with pytest.raises(CaptionError, match="caption order"):
        CaptionRule.parse(order)
