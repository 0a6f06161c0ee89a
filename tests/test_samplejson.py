"""The sample JSON keeps one type per field and matches the features its dataset card declares."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curation.metrics import METRIC_COLUMNS
from curation.records import TAG_CATEGORIES
from lineart.augment import OP_PARAMS, OPS, AugmentPolicy, draw
from sharding import samplejson

_PY = {"int64": int, "float64": float, "string": str, "bool": bool}


def _row(**over) -> dict:
    row = {
        "key": "danbooru_7", "post_id": 7, "source": "danbooru", "source_id": "7", "rating": "s",
        "score": -3.0, "fav_count": 12, "quality_score": 0.61, "bucket_w": 512, "bucket_h": 768,
        "width": 1000, "height": 1500, "crop_left": 0, "crop_top": 0, "crop_right": 1000,
        "crop_bottom": 1500, "sha256": "ab" * 32,
        **{f"tags_{c}": [f"{c}_tag", "x"] for c in TAG_CATEGORIES},
        **{c: 0.5 for c in METRIC_COLUMNS},
    }  # fmt: skip
    row.update(over)
    return row


def _conforms(value, feature: dict) -> None:
    """``value`` has exactly the shape and JSON types of one HF YAML feature."""
    if "struct" in feature:
        assert isinstance(value, dict) and set(value) <= {f["name"] for f in feature["struct"]}, feature[
            "name"
        ]
        for sub in feature["struct"]:
            if sub["name"] in value:
                _conforms(value[sub["name"]], sub)
    elif "list" in feature:
        assert isinstance(value, list) and all(type(v) is _PY[feature["list"]] for v in value), feature[
            "name"
        ]
    else:
        assert type(value) is _PY[feature["dtype"]], (feature["name"], value)


def _full_shape(feature: dict) -> set[str]:
    return {f["name"] for f in feature["struct"]}


@pytest.mark.parametrize("augment", [False, True])
def test_every_field_has_its_declared_type_for_site_and_folder_rows(augment):
    versions = {"canny": "3", "xdog": "2"}
    features = samplejson.json_features(list(versions), augment)
    policy = AugmentPolicy(enabled=True, **{f"{op}_p": 1.0 for op in OPS})
    records = {n: draw(policy, np.random.default_rng(i)) for i, n in enumerate(versions)} if augment else None
    folder = _row(
        post_id=None, rating=None, score=math.nan, fav_count=None, quality_score=math.nan, sha256=None,
        **{f"tags_{c}": [] for c in TAG_CATEGORIES}, **{c: math.nan for c in METRIC_COLUMNS},
    )  # fmt: skip
    site = json.loads(samplejson.encode(_row(), versions, records))
    bare = json.loads(samplejson.encode(folder, versions, records, {"xdog": "drowned: ink 0.6"}))
    for meta in (site, bare):
        assert set(meta) == _full_shape(features)  # every top-level field, always
        _conforms(meta, features)
        assert "null" not in json.dumps(meta) and set(meta["dropped_lines"]) == set(versions)
    if augment:  # every op a draw can record is declared with its parameters' types
        assert set(site["augment"]["canny"]) == set(OPS)
    assert site["tags"]["general"] == "general_tag x" and site["score"] == -3.0 and site["has_score"]
    assert (bare["id"], bare["rating"], bare["fav_count"], bare["has_score"]) == (-1, "", -1, False)
    assert bare["metrics"]["jpeg_quality"] == bare["quality_score"] == -1.0 and bare["tags"]["general"] == ""
    assert bare["dropped_lines"] == {"canny": "", "xdog": "drowned: ink 0.6"}


def test_decode_gives_tag_lists_for_both_contracts():
    new = samplejson.decode(samplejson.encode(_row(), {"canny": "3"}))
    assert new["tags"]["artist"] == ["artist_tag", "x"]
    old = samplejson.decode(json.dumps({"key": "k", "tags": {"general": ["a", "b"], "meta": []}}).encode())
    assert old["tags"] == {"general": ["a", "b"], "meta": []}


def test_op_params_match_what_draw_records():
    policy = AugmentPolicy(enabled=True, **{f"{op}_p": 1.0 for op in OPS})
    record = draw(policy, np.random.default_rng(3))
    assert list(record) == list(OP_PARAMS) == list(OPS)
    for op, params in record.items():
        assert {k: type(v) for k, v in params.items()} == OP_PARAMS[op]


def test_dataset_card_front_matter_is_yaml_with_the_shards_and_features():
    yaml = pytest.importorskip("yaml")
    card = samplejson.dataset_card(["canny", "xdog"], "webp", augment=False, fingerprint="ab" * 32)
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["configs"][0]["data_files"][0]["path"] == "shards/*/*.tar"
    assert "ab" * 32 in meta["configs"][0]["description"]  # in the YAML that HF hashes, not only the prose
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names == ["__key__", "__url__", "webp", "json", "txt", "lineart.canny.png", "lineart.xdog.png"]
    assert "load_dataset" in body
    old = samplejson.dataset_card(["canny"], "jpg", augment=False, fingerprint="0" * 64, txt=False)
    assert "txt" not in [
        f["name"] for f in yaml.safe_load(old.split("---\n", 2)[1])["dataset_info"]["features"]
    ]
