"""Hostile metadata files, made for real: links out of the source, FIFOs, a sparse 1 GiB line, an
8 GiB array, a folder chain 1,000 deep. Each is one reject row (or is read as usual); nothing
outside the source is read, no read is unbounded, nothing recurses. And ``calibrate``'s labels.

The same for every metadata reader of issue 23: SQLite / DuckDB files, parquet metadata and
parquet with images, tar / zip / tar.gz archives and their hfutils indexes, WebDataset sidecar
members, folder caption files, a linepairs OUT's build.json and manifest, tag tables. A link whose
target is a FIFO is the probe: anything that opened it would hang (the ``records`` alarm)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys

import pyarrow as pa
import pytest
from PIL import Image

from curation.sources import SourceError, detect_kind, iter_records, load_tag_table, parse_source

from .conftest import gradient_image
from .dumps import hf_row, kblueleaf_db, write_parquet, write_tar, write_tgz, write_zip
from .helpers import REPO, cli, write_config


def post(post_id: int) -> dict:
    return {"id": post_id, "md5": f"{post_id:032x}", "file_ext": "png", "image_width": 320, "image_height": 320,
            "rating": "g", "score": 1, "tag_string_general": "1girl"}  # fmt: skip


def image(path) -> None:
    Image.fromarray(gradient_image(320, 320, seed=len(str(path)))).save(path)


@contextlib.contextmanager
def within(seconds: int):
    """TimeoutError when the block takes longer (an open of a FIFO blocks forever)."""
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hung")))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def records(path: str) -> dict[str, tuple[str | None, str | None]]:
    """source_id -> (reject reason, detail) of every record of the source at ``path``."""
    with within(60):
        return {r.source_id: (r.reject_reason, r.reject_detail) for r in iter_records(parse_source(path))}


def _peak_growth(imports: str, body: str, arg: str, timeout: float) -> tuple[str, float]:
    """Run ``body`` (``arg`` as ``sys.argv[1]``) in a fresh Python after ``imports``: what it printed,
    and how far its peak memory grew meanwhile, in MiB (the imports not counted)."""
    code = (
        f"import resource, sys\n{imports}"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{body}"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, arg], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert res.returncode == 0, res.stderr[-2000:]
    printed, _, grown = res.stdout.strip().rpartition("\n")
    return printed, float(grown)


def test_api_metadata_links_out_of_the_source_are_never_read(tmp_path):
    """Was: a post defined outside the source was built, and /etc/passwd's lines became rows."""
    api, elsewhere = tmp_path / "api", tmp_path / "elsewhere"
    api.mkdir()
    elsewhere.mkdir()
    (api / "posts.jsonl").write_text(json.dumps(post(1)) + "\n")
    (elsewhere / "planted.jsonl").write_text(json.dumps(post(777)) + "\n")
    os.symlink(elsewhere / "planted.jsonl", api / "planted.jsonl")
    os.symlink("/etc/passwd", api / "passwd.json")
    os.mkfifo(api / "fifo.jsonl")
    for post_id in (1, 777):
        image(api / f"{post_id}.png")
    found = records(str(api))
    assert found["1"] == (None, None)
    outside = {k: v for k, v in found.items() if v[0] == "outside_source"}
    assert len(outside) == 2 and any("/etc/passwd" in d for _, d in outside.values())
    assert found["777.png"][0] == "no_metadata"  # the planted post is not read, so its image has none
    (fifo,) = [v for v in found.values() if "not a regular file" in (v[1] or "")]
    assert fifo[0] == "bad_metadata"
    assert len(found) == 5  # and nothing else: no row per line of /etc/passwd


def test_gwern_and_hf_tar_metadata_links_out_are_never_read(tmp_path):
    gwern = tmp_path / "gwern"
    (gwern / "metadata").mkdir(parents=True)
    (gwern / "original" / "0001").mkdir(parents=True)
    image(gwern / "original" / "0001" / "1.png")
    (tmp_path / "outside.json").write_text(json.dumps(post(1)) + "\n")
    os.symlink(tmp_path / "outside.json", gwern / "metadata" / "posts.json")
    found = records(str(gwern))
    assert [v[0] for v in found.values()] == ["outside_source"]

    hf = tmp_path / "hf"
    write_parquet(str(tmp_path / "rows.parquet"), [hf_row(7001)])
    hf.mkdir()
    os.symlink(tmp_path / "rows.parquet", hf / "metadata.parquet")
    write_tar(
        str(hf / "images" / "0000.tar"),
        {"7001.png": open(gwern / "original" / "0001" / "1.png", "rb").read()},
    )
    found = records(f"hf-tar:{hf}")
    assert sorted(v[0] for v in found.values()) == ["no_metadata", "outside_source"]


def test_a_sparse_gigabyte_line_is_one_row_in_bounded_memory(tmp_path):
    """Was: a sparse 1 GiB .jsonl without a newline took the driver to 2.27 GB RSS."""
    api = tmp_path / "api"
    api.mkdir()
    with open(api / "posts.jsonl", "wb") as fh:
        fh.write((json.dumps(post(1)) + "\n").encode())
        fh.truncate(1 << 30)  # a 1 GiB line of NUL bytes, no newline: holes on disk
    with open(api / "huge.json", "wb") as fh:
        fh.write(b"[")
        fh.truncate(8 << 30)  # an 8 GiB JSON array: refused from its size, never read
    image(api / "1.png")
    printed, grown = _peak_growth(
        "import json\nfrom curation.sources import iter_records, parse_source\n",
        "rows = [(r.source_id, r.reject_reason, r.reject_detail) for r in iter_records(parse_source(sys.argv[1]))]\n"
        "print(json.dumps(rows))\n",
        str(api),
        timeout=300,
    )
    assert grown < 150, grown
    by_reason = sorted((reason or "", detail or "") for _, reason, detail in json.loads(printed))
    assert [r for r, _ in by_reason] == ["", "bad_metadata", "bad_metadata"], by_reason
    assert any("over 16 MiB" in d for _, d in by_reason) and any("JSON lines" in d for _, d in by_reason)


def nested(top, depth: int) -> str:
    """``top/d/d/.../d`` (``depth`` folders), made one level at a time (os.makedirs and pathlib
    recurse once per level themselves)."""
    path = str(top)
    os.mkdir(path)
    for _ in range(depth):
        path = os.path.join(path, "d")
        os.mkdir(path)
    return path


def remove_nested(top: str) -> None:
    """Remove a folder tree deepest first, without recursion (shutil.rmtree, and so pytest's own
    clean-up of old temporary folders, recurses once per level)."""
    order, stack = [], [top]
    while stack:
        path = stack.pop()
        order.append(path)
        stack += [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    for path in reversed(order):
        for entry in os.scandir(path):
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
        os.rmdir(path)


@pytest.fixture
def deep_tmp(tmp_path):
    yield tmp_path
    for name in ("art", "api", "wds"):
        if os.path.isdir(tmp_path / name):
            remove_nested(str(tmp_path / name))


def test_a_folder_chain_a_thousand_deep_is_enumerated(deep_tmp):
    """Was: RecursionError (a traceback) on every re-run."""
    deep = deep_tmp / "art"
    chain = nested(deep, 1000)
    image(os.path.join(chain, "bottom.png"))
    image(deep / "top.png")
    found = records(str(deep))
    assert len(found) == 2 and all(v == (None, None) for v in found.values())
    api = deep_tmp / "api"
    chain = nested(api, 1000)
    (api / "posts.jsonl").write_text(json.dumps(post(5)) + "\n")
    image(os.path.join(chain, "5.png"))  # images are looked up anywhere below the API folder
    assert records(str(api)) == {"5": (None, None)}
    wds = deep_tmp / "wds"  # detection walks without recursion too (its first loose image decides)
    chain = nested(wds, 1000)
    write_tar(os.path.join(chain, "0000.tar"), {"9.png": png(9), "9.json": json.dumps(post(9)).encode()})
    assert detect_kind(str(wds)) == "webdataset"
    assert records(str(wds)) == {"9": (None, None)}


@pytest.fixture
def labelled(corpus, tmp_path):
    folder = tmp_path / "cal"
    folder.mkdir()
    for i, name in enumerate(("anime2sketch_001.jpg", "style2paints_004.jpg")):
        os.symlink(os.path.join(corpus, name), folder / f"link{i}.jpg")  # links out of the folder
        image(folder / f"own{i}.png")
    return folder


def test_calibrate_refuses_a_file_labelled_twice(labelled, tmp_path):
    """Was: the last label silently won."""
    labels = tmp_path / "LABELS.csv"
    labels.write_text("file,label\nown0.png,keep\nown1.png,reject_blurry\nown0.png,reject_photo\n")
    res = cli("calibrate", str(labelled), "--labels", str(labels))
    assert res.returncode == 2 and "'own0.png' on lines 2, 4" in res.stderr and "Traceback" not in res.stderr


def test_calibrate_refuses_labelled_images_linking_out_of_the_folder(labelled, tmp_path):
    """Was: followed (the build's symlink policy did not apply to calibrate)."""
    labels = tmp_path / "LABELS.csv"
    labels.write_text("file,label\nown0.png,keep\nlink0.jpg,keep\n")
    res = cli("calibrate", str(labelled), "--labels", str(labels))
    assert res.returncode == 2 and "link0.jpg is a link to" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------- the readers of issue 23


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gradient_image(96, 96, seed=seed)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def trap(tmp_path):
    """A FIFO outside every source: a link to it that anything opens hangs (and the alarm fails)."""
    path = tmp_path / "elsewhere" / "trap"
    path.parent.mkdir()
    os.mkfifo(path)
    return path


def reasons(found: dict) -> list[str]:
    return sorted(v[0] or "kept" for v in found.values())


def test_database_files_linking_out_or_fifos_are_never_opened(tmp_path, trap):
    real = kblueleaf_db(str(tmp_path / "elsewhere" / "danbooru.db"), [(1, 0, "png", {"general": ["1girl"]})])
    for name, target in (("linked", real), ("trapped", trap)):  # a real database, and a FIFO, outside
        src = tmp_path / name
        write_tar(str(src / "images" / "0000.tar"), {"1.png": png(1)})
        os.symlink(target, src / "danbooru.db")
        assert detect_kind(str(src)) == "sqlite"  # by its name: a refused file is never opened to look
        found = records(str(src))
        assert reasons(found) == ["no_metadata", "outside_source"], found
        assert str(target) in found["danbooru.db"][1]
    fifo = tmp_path / "fifo"
    write_tar(str(fifo / "images" / "0000.tar"), {"1.png": png(1)})
    os.mkfifo(fifo / "danbooru.db")
    found = records(str(fifo))
    assert found["danbooru.db"][0] == "bad_metadata" and "not a regular file" in found["danbooru.db"][1]
    assert reasons(found) == ["bad_metadata", "no_metadata"]
    duck = tmp_path / "duck"
    duck.mkdir()
    os.symlink(trap, duck / "meta.duckdb")
    found = records(f"duckdb:{duck}")
    assert list(found) == ["meta.duckdb"] and found["meta.duckdb"][0] == "outside_source"
    with pytest.raises(SourceError, match="neither a regular file nor a folder"):
        parse_source(f"sqlite:{fifo / 'danbooru.db'}")  # a FIFO named as the source itself


def test_a_sqlite_value_over_the_cap_is_one_line_not_a_gigabyte(tmp_path):
    db = kblueleaf_db(str(tmp_path / "src" / "danbooru.db"), [(1, 0, "png", {"general": ["1girl"]})])
    con = sqlite3.connect(db)
    con.execute("UPDATE post SET file_ext = ? WHERE id = 1", ("x" * (24 << 20),))  # a 24 MiB value
    con.commit()
    con.close()
    with pytest.raises(SourceError, match=r"danbooru\.db.*too big"):
        records(db)


def image_parquet(path: str, seeds: list[int]) -> None:
    """Parquet with the images inside (an HF ``Image`` struct column) and a tag column."""
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [{"image": {"bytes": png(s), "path": f"{s}.png"}, "tags": "1girl solo"} for s in seeds]
    write_parquet(path, rows, pa.schema([("image", struct), ("tags", pa.string())]))


def test_parquet_files_linking_out_or_fifos_are_never_opened(tmp_path, trap):
    src = tmp_path / "pq"
    image_parquet(str(src / "data" / "a.parquet"), [1, 2])
    image_parquet(str(tmp_path / "elsewhere" / "b.parquet"), [3])
    os.symlink(tmp_path / "elsewhere" / "b.parquet", src / "data" / "b.parquet")
    os.symlink(trap, src / "data" / "c.parquet")
    os.mkfifo(src / "data" / "d.parquet")
    assert detect_kind(str(src)) == "parquet-images"
    found = records(str(src))
    assert reasons(found) == ["bad_metadata", "kept", "kept", "outside_source", "outside_source"], found
    assert found["data/d.parquet"][0] == "bad_metadata" and found["data/c.parquet"][0] == "outside_source"
    hf = tmp_path / "hf"  # parquet metadata beside archives: a FIFO among the metadata files
    write_parquet(str(hf / "metadata.parquet"), [hf_row(1, ext="png")])
    os.mkfifo(hf / "more.parquet")
    write_tar(str(hf / "images" / "0000.tar"), {"1.png": png(1)})
    found = records(f"hf-tar:{hf}")
    assert found["1"] == (None, None) and found["more.parquet"][0] == "bad_metadata" and len(found) == 2


def test_archives_and_their_indexes_linking_out_or_fifos_are_never_opened(tmp_path, trap):
    src = tmp_path / "wds"
    write_tar(str(src / "good.tar"), {"1.png": png(1), "1.json": json.dumps(post(1)).encode()})
    os.symlink(trap, src / "good.json")  # its hfutils index: never opened, the headers are read
    write_tar(str(tmp_path / "elsewhere" / "other.tar"), {"2.png": png(2)})
    os.symlink(tmp_path / "elsewhere" / "other.tar", src / "linked.tar")
    os.symlink(trap, src / "trapped.zip")
    for name in ("fifo.tar", "fifo.zip", "fifo.tar.gz"):
        os.mkfifo(src / name)
    write_zip(str(src / "ok.zip"), {"3.png": png(3)})
    write_tgz(str(src / "ok.tgz"), {"4.png": png(4)})
    assert detect_kind(str(src)) == "webdataset"
    found = records(str(src))
    assert found["1"] == (None, None) and found["3"] == (None, None) and found["4"] == (None, None)
    assert found["good.json"][0] == "outside_source" and "index of good.tar" in found["good.json"][1]
    assert found["linked.tar"][0] == "outside_source" and found["trapped.zip"][0] == "outside_source"
    assert {found[n][0] for n in ("fifo.tar", "fifo.zip", "fifo.tar.gz")} == {"bad_metadata"}
    assert len(found) == 9


def test_a_sidecar_member_over_its_cap_rejects_only_its_sample(tmp_path):
    big = json.dumps({**post(1), "description": "x" * (2 << 20)}).encode()  # 2 MiB > the 1 MiB cap
    write_tar(str(tmp_path / "wds" / "0000.tar"),
              {"1.png": png(1), "1.json": big, "2.png": png(2), "2.json": json.dumps(post(2)).encode()})  # fmt: skip
    found = records(str(tmp_path / "wds"))
    assert found["2"] == (None, None)
    assert found["1"][0] == "bad_metadata" and "1.json cannot be read" in found["1"][1], found


def test_folder_caption_files_linking_out_or_fifos_are_one_row_each(tmp_path, trap):
    """A refused caption file is its own reject row; its image is read as one without a caption
    file (or with the next caption extension that may be read)."""
    art = tmp_path / "art"
    art.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        image(art / f"{name}.png")
    (tmp_path / "elsewhere" / "tags.txt").write_text("1girl, banned_tag")
    os.symlink(tmp_path / "elsewhere" / "tags.txt", art / "a.txt")
    os.symlink(trap, art / "b.txt")
    os.mkfifo(art / "c.caption")
    (art / "d.txt").write_text("1girl, smile")
    os.mkfifo(art / "e.txt")
    (art / "e.caption").write_text("solo, looking up")
    found = records(str(art))
    assert found["a.txt"][0] == "outside_source" and "tags.txt" in found["a.txt"][1]
    assert found["b.txt"][0] == "outside_source"
    assert found["c.caption"][0] == "bad_metadata" and "not a regular file" in found["c.caption"][1]
    assert found["e.txt"][0] == "bad_metadata"
    assert {k for k, v in found.items() if v == (None, None)} == {f"{n}.png" for n in "abcde"}
    assert len(found) == 9
    tags = {
        r.source_id: r.tags["general"]
        for r in iter_records(parse_source(str(art)))
        if r.reject_reason is None
    }
    assert tags == {
        "a.png": [],
        "b.png": [],
        "c.png": [],
        "d.png": ["1girl", "smile"],
        "e.png": ["solo", "looking_up"],
    }


def linepairs_out(root) -> None:
    """A finished OUT as far as a source reads one: build.json, manifest.parquet, a shard."""
    root.mkdir()
    (root / "build.json").write_text(json.dumps({"complete": True, "contract": 4}))
    write_tar(str(root / "shards" / "96x96" / "000000.tar"),
              {"danbooru_1.jpg": png(1), "danbooru_1.json": b"{}", "danbooru_1.txt": b"1girl"})  # fmt: skip


def test_a_linepairs_out_whose_manifest_or_build_json_is_refused_is_one_reject_row(tmp_path, trap):
    out = tmp_path / "out"
    linepairs_out(out)
    os.symlink(trap, out / "manifest.parquet")
    assert detect_kind(str(out)) == "linepairs"
    found = records(str(out))
    assert (
        reasons(found) == ["no_metadata", "outside_source"]
        and found["manifest.parquet"][0] == "outside_source"
    )
    fifo = tmp_path / "fifo"
    linepairs_out(fifo)
    (fifo / "build.json").unlink()
    os.mkfifo(fifo / "build.json")
    write_parquet(str(fifo / "manifest.parquet"), [{"key": "danbooru_1"}])
    found = records(f"linepairs:{fifo}")
    assert found["build.json"][0] == "bad_metadata" and reasons(found) == ["bad_metadata", "no_metadata"]


def test_tag_tables_that_are_fifos_or_over_their_caps_are_one_line(tmp_path):
    fifo = tmp_path / "selected_tags.csv"
    os.mkfifo(fifo)
    with within(30), pytest.raises(SourceError, match="not a regular file"):
        load_tag_table(str(fifo))
    array = tmp_path / "tags.json"
    with open(array, "wb") as fh:
        fh.write(b"[")
        fh.truncate(8 << 30)  # 8 GiB, sparse: refused from its size
    with pytest.raises(SourceError, match="not read whole"):
        load_tag_table(str(array))
    line = tmp_path / "tags.csv"
    with open(line, "wb") as fh:
        fh.write(b"name,category\nhatsune_miku,4\n")
        fh.truncate(1 << 30)  # a 1 GiB line of NUL bytes, no newline
    message, grown = _peak_growth(
        "from curation.tags import TagTableError, read_tag_table\n",
        "try:\n    read_tag_table(sys.argv[1])\nexcept TagTableError as exc:\n    print(exc)\n",
        str(line),
        timeout=120,
    )
    assert "line 3 is over 16 MiB" in message and grown < 100, (message, grown)
    config = write_config(str(tmp_path / "build.toml"), f'[sidecars]\ntag_table = "{fifo}"\n')
    (tmp_path / "art").mkdir()
    image(tmp_path / "art" / "a.png")
    res = cli("inspect", str(tmp_path / "art"), "--config", config, "--no-pixels", timeout=60)
    assert res.returncode == 2 and "not a regular file" in res.stderr and "Traceback" not in res.stderr


def test_inspect_names_a_refused_database_and_does_not_hang(tmp_path, trap):
    src = tmp_path / "src"
    write_tar(str(src / "images" / "0000.tar"), {"1.png": png(1)})
    os.symlink(trap, src / "danbooru.db")
    res = cli("inspect", str(src), "--no-pixels", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "danbooru.db: not read (outside_source)" in res.stdout and "one reject row" in res.stdout
