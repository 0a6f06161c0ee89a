"""One build over every source kind at once (folder + API JSON + gwern + HF tar/parquet), accounted in full."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq

from curation.records import REJECT_REASONS
from curation.sources import iter_records, parse_source, source_from_table
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from pipelines.config import config_from_dict
from sharding.verify import verify_build

from .dumps import SAMPLES, api_dump, gwern_dump, hf_row, write_parquet, write_tar


def tree(root: str, skip: str) -> set[str]:
    out = set()
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(dirpath, d) != skip]
        out.update(os.path.relpath(os.path.join(dirpath, f), root) for f in files)
    return out


def resized_jpeg(path: str, scale: float, quality: int) -> bytes:
    img = cv2.imread(path)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def make_sources(tmp, shared, corpus):
    ill = lambda n: os.path.join(corpus, n)  # noqa: E731
    # 1. a plain folder: one image of the known near-duplicate pair, a tagged image, junk, a sketch
    folder = tmp / "folder"
    folder.mkdir()
    shutil.copy(ill("style2paints_014.jpg"), folder / "style2paints_014.jpg")
    shutil.copy(ill("style2paints_004.jpg"), folder / "tagged.jpg")
    (folder / "tagged.txt").write_text("1girl, solo, smile, blue_hair, <i>&amp;, \U0001f600\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    shutil.copy(
        os.path.join(shared, "corpus", "sketches", "style2paints_sketch_004.jpg"), folder / "sketch.jpg"
    )
    cv2.imwrite(str(folder / "tiny.png"), np.full((40, 60, 3), 128, np.uint8))
    # 2. Danbooru API JSON (real 2020 records), images for three of its ten posts
    api, _ = api_dump(str(tmp / "api"), shared, {4018203: ill("style2paints_005.jpg"),
                                                 4018202: ill("style2paints_017.jpg"),
                                                 4018201: ill("danbooregion_007.png")})  # fmt: skip
    # 3. gwern layout (the real 2017-2020 record)
    gwern = gwern_dump(str(tmp / "gwern"), shared, ill("style2paints_012.jpg"))
    # 4. HF tar + parquet: the other half of the near-duplicate pair (resized, re-encoded) and trouble
    hf = tmp / "hf"
    write_parquet(str(hf / "metadata.parquet"), [hf_row(3001), hf_row(3002, rating="e"), hf_row(3003),
                                                 hf_row(3004, tag_string_meta="comic"), hf_row(3005)])  # fmt: skip
    with open(ill("style2paints_009.jpg"), "rb") as fh:
        plain = fh.read()
    write_tar(
        str(hf / "images" / "0001.tar"),
        {"3001.jpg": resized_jpeg(ill("danbooregion_006.jpg"), 0.7, 80), "3002.jpg": plain, "3004.jpg": plain,
         "3005.png": cv2.imencode(".png", cv2.imread(ill("style2paints_002.jpg")))[1].tobytes(),
         "3999.jpg": plain, "../escape.jpg": plain},
        symlinks={"3998.jpg": "../../../etc/passwd"},
    )  # fmt: skip
    return str(folder), api, gwern, str(hf)


def test_mixed_sources_build_accounts_for_every_input(ray_cluster, shared, corpus, tmp_path):
    folder, api, gwern, hf = make_sources(tmp_path, shared, corpus)
    cfg = config_from_dict(
        {
            "sources": [{"name": "hf", "kind": "hf-tar", "path": hf, "share": 0.5},
                        {"name": "api", "path": api, "share": 0.3}],
            "filters": {"min_tags": 3},
            # the same shares as on the [[sources]] tables (equal: accepted), plus the CLI sources;
            # api23 keeps nothing, so it needs no share
            "weights": {"shares": {"hf": 0.5, "api": 0.3, "art": 0.1, "gwern": 0.1}},
            "buckets": {"max_area": 256 * 320, "min_side": 192, "max_side": 512},
            "extractors": ["canny"],
            "shards": {"samples_per_shard": 4},
        }
    )  # fmt: skip
    specs = [source_from_table(t) for t in cfg.sources] + [
        parse_source(f"art=folder:{folder}"),
        parse_source(f"gwern={gwern}"),
        parse_source(f"api23={os.path.join(shared, SAMPLES, 'api_posts_2023_media_asset_artanalyzer.jsonl')}",
                     images=str(tmp_path / "folder")),
    ]  # fmt: skip
    assert [s.kind for s in specs] == ["hf-tar", "danbooru-api", "folder", "gwern", "danbooru-api"]
    expected = {rec.key for spec in specs for rec in iter_records(spec)}
    out = str(tmp_path / "out")
    before = tree(str(tmp_path), out)

    summary = run_build(BuildRequest(specs, out, cfg, show_progress=False))

    counts = summary.counts
    manifest = pq.read_table(os.path.join(out, "manifest.parquet"))
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    kept_keys = manifest["key"].to_pylist()
    reject_keys = [r["key"] for r in rejects]
    # every input exactly once: kept or rejected with a reason from the vocabulary
    assert counts["inputs"] == len(expected) == counts["samples"] + counts["rejected"]
    assert sorted(kept_keys + reject_keys) == sorted(expected)
    for r in rejects:
        assert r["reason"] in REJECT_REASONS[r["stage"]], r
        assert r["detail"]
    reasons = {(r["source"], r["source_id"]): r["reason"] for r in rejects}
    assert reasons[("art", "broken.jpg")] == "decode_error"
    assert reasons[("art", "sketch.jpg")] in ("greyscale", "monochrome")
    assert reasons[("art", "tiny.png")] == "too_small"
    assert reasons[("hf", "3002")] == "rating"
    assert reasons[("hf", "3003")] == "missing_file"
    assert reasons[("hf", "3004")] == "banned_tag"
    assert reasons[("hf", "3999")] == "no_metadata"
    assert sum(v == "unsafe_member" for (s, _), v in reasons.items() if s == "hf") == 2
    # api23's two posts are videos; its image folder is art's, whose pictures no post names: reported
    api23 = [v for (s, _), v in reasons.items() if s == "api23"]
    assert api23.count("unsupported_format") == 2 and set(api23) == {"unsupported_format", "no_metadata"}
    assert sum(v == "missing_file" for (s, _), v in reasons.items() if s == "api") == 7
    # the known near-duplicate pair, across two sources: one kept, the other names it
    dups = [r for r in rejects if r["stage"] == "dedup"]
    assert len(dups) == 1 and dups[0]["reason"] == "near_duplicate"
    pair = {"art_style2paints_014_jpg", "hf_3001"}
    assert any(dups[0]["key"].startswith(p) for p in pair) and any(
        dups[0]["duplicate_of"].startswith(p) for p in pair
    )
    assert dups[0]["duplicate_of"] in kept_keys
    # kept samples carry their metrics and quality; sources from all four kinds made it through
    assert set(manifest["source"].to_pylist()) >= {"hf", "api", "art", "gwern"}
    for col in ("quality_score", "sharpness", "colorfulness", "phash", "chroma_p95"):
        assert manifest[col].null_count == 0, col
    tags = dict(zip(kept_keys, manifest["tags"].to_pylist(), strict=True))
    assert "<i>&amp;" in next(v for k, v in tags.items() if k.startswith("art_tagged"))
    # summary counts by reason; shares are part of the recorded request
    assert counts["rejects_by_reason"]["near_duplicate"] == 1
    with open(os.path.join(out, "build.json"), encoding="utf-8") as fh:
        build = json.load(fh)
    assert {s["name"]: s["share"] for s in build["request"]["sources"]}["hf"] == 0.5
    assert verify_build(out) == []
    # nothing was written outside OUT (no extracted tar members, no '../escape.jpg')
    assert tree(str(tmp_path), out) == before
