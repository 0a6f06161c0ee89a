"""Hostile metadata files, made for real: links out of the source, FIFOs, a sparse 1 GiB line, an
8 GiB array, a folder chain 1,000 deep. Each is one reject row (or is read as usual); nothing
outside the source is read, no read is unbounded, nothing recurses. And ``calibrate``'s labels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from curation.sources import iter_records, parse_source

from .conftest import gradient_image
from .dumps import hf_row, write_parquet, write_tar
from .helpers import REPO, cli


def post(post_id: int) -> dict:
    return {"id": post_id, "md5": f"{post_id:032x}", "file_ext": "png", "image_width": 320, "image_height": 320,
            "rating": "g", "score": 1, "tag_string_general": "1girl"}  # fmt: skip


def image(path) -> None:
    Image.fromarray(gradient_image(320, 320, seed=len(str(path)))).save(path)


def records(path: str) -> dict[str, tuple[str | None, str | None]]:
    """source_id -> (reject reason, detail) of every record of the source at ``path``."""
    previous = signal.signal(
        signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("enumeration hung"))
    )
    signal.alarm(60)
    try:
        return {r.source_id: (r.reject_reason, r.reject_detail) for r in iter_records(parse_source(path))}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
    code = (
        "import json, resource, sys\n"
        "from curation.sources import iter_records, parse_source\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "rows = [(r.source_id, r.reject_reason, r.reject_detail) for r in iter_records(parse_source(sys.argv[1]))]\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
        "print(json.dumps({'rows': rows, 'grown_mib': grown}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(api)], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert res.returncode == 0, res.stderr[-2000:]
    found = json.loads(res.stdout)
    assert found["grown_mib"] < 150, found["grown_mib"]
    by_reason = sorted((reason or "", detail or "") for _, reason, detail in found["rows"])
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
    for name in ("art", "api"):
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
