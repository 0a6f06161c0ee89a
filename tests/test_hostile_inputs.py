"""Hostile inputs made for real (FIFOs, links, sparse files, non-UTF-8 names, broken EXIF/TIFF,
overflowing and nested JSON): each ends as exactly one reject row with its reason, or is kept."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.decode import header_size
from curation.fetch import read_location
from curation.metrics import MetricThresholds
from curation.scan import ScanSettings, scan_row
from curation.sources import iter_records, parse_source
from sharding.schema import RECORD_SCHEMA

from .badinputs import EPS, SJIS_NAME, write_hostile_api, write_hostile_folder
from .dumps import hf_row, write_parquet, write_tar
from .helpers import WritesOnUnpickle, cli, write_config

DECODING_ONLY = ScanSettings(min_side=64, metrics=MetricThresholds(enabled=False))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    folder, api = str(base / "folder"), str(base / "api")
    expected = {
        "folder": write_hostile_folder(folder, str(base / "elsewhere")),
        "danbooru": write_hostile_api(api),
    }
    return folder, api, expected


def test_each_hostile_file_is_one_reject_with_its_reason(hostile):
    folder, _, expected = hostile
    rows = [rec.to_row() for rec in iter_records(parse_source(folder))]
    pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)  # non-UTF-8 names fit parquet
    got = {}
    for row in rows:
        out, _ = scan_row(row, DECODING_ONLY)
        got[out["source_id"]] = out
    assert sorted(got) == sorted(expected["folder"])  # the folder link loop added nothing
    for name, reason in expected["folder"].items():
        row = got[name]
        if reason is None:
            assert row["status"] == "kept", (name, row["reason"], row["detail"])
        else:
            assert (row["status"], row["reason"]) == ("rejected", reason), (name, row["detail"])
            assert row["detail"] and "\n" not in row["detail"]
    assert "struct.error" in got["exif wrong type.jpg"]["detail"]
    assert "Missing dimensions" in got["broken tiff.png"]["detail"]
    assert "FIFO" in got["fifo.png"]["detail"]
    assert "/etc/passwd" in got["passwd.png"]["detail"]
    # the non-UTF-8 file is read through its quoted location, byte-exact
    sjis = got["sjis_\\x83e\\x83X\\x83g.png"]
    with open(os.path.join(os.fsencode(folder), SJIS_NAME), "rb") as fh:
        assert read_location(sjis["location"]) == fh.read()


def test_sidecar_link_out_of_the_folder_is_not_read(hostile):
    folder, _, _ = hostile
    real = next(r for r in iter_records(parse_source(folder)) if r.source_id == "real.png")
    assert real.tags["general"] == []  # real.txt links to /etc/passwd


def test_only_supported_formats_are_opened():
    assert header_size(EPS) is None  # Pillow's EPS plugin (Ghostscript) is never tried


def test_deadline_rejects_a_slow_input(corpus):
    row = {"source": "x", "source_id": "a", "location": os.path.join(corpus, "style2paints_004.jpg")}
    slow = ScanSettings(min_side=64, max_seconds=1e-4)
    out, _ = scan_row(row, slow)
    assert (out["status"], out["stage"], out["reason"]) == ("rejected", "decode", "too_slow"), out["detail"]
    out, _ = scan_row(row, ScanSettings(min_side=64))
    assert out["reason"] != "too_slow"


def test_byte_cap_holds_while_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG" + b"\x00" * 5000)
    out, _ = scan_row({"source": "x", "source_id": "b", "location": str(path)}, ScanSettings(max_bytes=4096))
    assert out["reason"] == "too_many_bytes" and "4096" in out["detail"]


def test_folder_link_loops_do_not_repeat_hf_tar_or_gwern(corpus, tmp_path):
    img = open(os.path.join(corpus, "style2paints_008.jpg"), "rb").read()
    hf = tmp_path / "hf"
    write_parquet(str(hf / "meta.parquet"), [hf_row(1), hf_row(2)])
    write_tar(str(hf / "images" / "0000.tar"), {"1.jpg": img, "2.jpg": img})
    os.symlink(hf / "images", hf / "images" / "again")
    os.symlink(hf, hf / "images" / "up")
    recs = list(iter_records(parse_source(str(hf))))
    assert sorted((r.source_id, r.reject_reason) for r in recs) == [("1", None), ("2", None)]
    # a tar linked in from outside the dump is not read
    other = tmp_path / "other"
    write_tar(str(other / "9.tar"), {"3.jpg": img})
    os.symlink(other / "9.tar", hf / "images" / "9.tar")
    recs = list(iter_records(parse_source(str(hf))))
    assert [r.reject_reason for r in recs if r.source_id not in ("1", "2")] == ["outside_source"]

    gw = tmp_path / "gwern"
    (gw / "metadata").mkdir(parents=True)
    (gw / "original" / "0001").mkdir(parents=True)
    (gw / "metadata" / "posts.jsonl").write_text('{"id": 1, "rating": "s", "file_ext": "jpg"}\n')
    (gw / "original" / "0001" / "1.jpg").write_bytes(img)
    os.symlink(gw / "metadata", gw / "metadata" / "loop")
    recs = list(iter_records(parse_source(str(gw))))
    assert [(r.source_id, r.reject_reason) for r in recs] == [("1", None)]


def test_non_utf8_tar_names_are_read_in_place(corpus, tmp_path):
    img = open(os.path.join(corpus, "style2paints_008.jpg"), "rb").read()
    hf = tmp_path / "hf"
    write_parquet(str(hf / "meta.parquet"), [hf_row(1)])
    write_tar(str(hf / "images" / "tmp.tar"), {"1.jpg": img})
    os.rename(hf / "images" / "tmp.tar", os.path.join(os.fsencode(hf / "images"), SJIS_NAME + b".tar"))
    (rec,) = iter_records(parse_source(str(hf)))
    row = rec.to_row()
    pa.Table.from_pylist([row], schema=RECORD_SCHEMA)
    assert read_location(row["location"]) == img


def test_hostile_build_accounts_for_every_input(hostile, ray_cluster, tmp_path):
    folder, api, expected = hostile
    out = str(tmp_path / "out")
    cfg = write_config(str(tmp_path / "c.toml"), "[filters]\nmin_tags = 0\n[dedup]\nenabled = false\n")
    res = cli("build", f"folder={folder}", api, "--out", out, "--config", cfg, address=ray_cluster)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    seen = [(r["source"], r["source_id"]) for r in manifest + rejects]
    want = [(source, sid) for source, names in expected.items() for sid in names]
    assert sorted(seen) == sorted(want)  # every input in exactly one place
    by_id = {(r["source"], r["source_id"]): r for r in rejects}
    for source, names in expected.items():
        for sid, reason in names.items():
            if reason is None:
                assert (source, sid) not in by_id or by_id[source, sid]["stage"] in ("metric", "pair"), sid
            else:
                assert by_id[source, sid]["reason"] == reason, (sid, by_id[source, sid])
    # nothing outside the source was read: /etc/passwd is neither hashed nor a tag
    passwd = hashlib.sha256(open("/etc/passwd", "rb").read()).hexdigest()
    scan = pq.read_table(os.path.join(out, "scan")).to_pylist()
    assert passwd not in {r["sha256"] for r in scan}
    assert not any("root:" in t for r in scan for t in r["tags_general"] or [])
    assert cli("verify", out).returncode == 0


def test_one_definition_for_record_columns_scan_defaults_and_reject_ids():
    import dataclasses

    from curation.records import TAG_CATEGORIES, Record
    from curation.scan import ScanConfig
    from pipelines.config import ScanConfig as ConfigScan
    from sharding.schema import REJECT_ID_COLUMNS, REJECT_SCHEMA, SCAN_SCHEMA

    fields = [f.name for f in dataclasses.fields(Record) if f.name != "tags"]
    assert RECORD_SCHEMA.names == ["seq", "key", *fields, *(f"tags_{c}" for c in TAG_CATEGORIES)]
    row = Record("s", "1", None).to_row()
    assert set(row) | {"seq"} == set(RECORD_SCHEMA.names)  # nothing pyarrow would drop silently
    assert "reject_reason" not in SCAN_SCHEMA.names and "reject_detail" not in SCAN_SCHEMA.names
    assert ConfigScan is ScanConfig  # the [scan] section and the scan's settings share their defaults
    default = ScanSettings()
    assert (default.max_pixels, default.max_bytes, default.min_side) == (
        ScanConfig.max_pixels, ScanConfig.max_bytes, ScanConfig.min_side,
    )  # fmt: skip
    assert REJECT_SCHEMA.names[: len(REJECT_ID_COLUMNS)] == list(REJECT_ID_COLUMNS)


def test_a_scorer_checkpoint_carrying_code_is_refused_without_pytorchs_advice(tmp_path):
    """Was: refused, but the message relayed PyTorch's advice to set weights_only=False."""
    import pickle

    import torch

    from curation.scorers.aesthetic import MLP_FILE

    from .scorer_checkpoints import write_aesthetic

    folder = str(tmp_path / "aesthetic")
    write_aesthetic(folder)
    marker = tmp_path / "pwned"
    torch.save(
        {"layers.0.weight": WritesOnUnpickle(str(marker))},
        os.path.join(folder, MLP_FILE),
        pickle_module=pickle,
    )
    cfg = write_config(str(tmp_path / "c.toml"), f'[scorers.aesthetic]\nweights = "{folder}"\n')
    src = tmp_path / "src"
    src.mkdir()
    res = cli("build", str(src), "--out", str(tmp_path / "out"), "--config", cfg, "-q")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert MLP_FILE in res.stderr and "restricted unpickler" in res.stderr and "GLOBAL" in res.stderr
    assert "weights_only" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not marker.exists()
