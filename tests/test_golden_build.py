"""The bytes of a build of the shared corpus, held fixed: a build, a reweight, an append and a retry
give the shards, tables and weight versions recorded below (made by the code before the build
spine was reshaped, issue 19). A change that moves one byte of a shard or one row of a table fails
here; a change that means to do that updates the values on purpose (``LINEPAIRS_GOLDEN_PRINT=1``
prints the new ones) and says why in its commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from .helpers import cli, write_config

# Two folder sources with tag captions, an exact copy inside the first, and a sketch (line art: a
# metric reject); the append brings the rest of the corpus into both folders.
FIRST, SECOND, LATER = slice(0, 16), slice(16, 24), slice(24, None)
CONFIG = """
[shards]
samples_per_shard = 4
[weights]
tag_balance = true
tag_categories = ["general"]
tag_threshold = 0.3
[weights.shares]
a = 0.6
b = 0.4
"""
REWEIGHT = "[weights]\nhigh_fraction = 0.25\n[weights.shares]\na = 0.5\nb = 0.5\n"
TAGS = ("1girl", "solo", "smile", "long_hair", "short_hair", "outdoors", "flower", "sky", "school_uniform")


def _caption(index: int) -> str:
    """A few tags per image, some common, some rare (so tag balancing has work to do)."""
    return ", ".join(TAGS[j] for j in range(len(TAGS)) if (index * 7 + j * 3) % 5 < 3 or j < 2)


def _add(folder: str, corpus: str, names: list[str], first: int) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(names, start=first):
        shutil.copy(os.path.join(corpus, name), os.path.join(folder, name))
        stem = os.path.splitext(name)[0]
        with open(os.path.join(folder, f"{stem}.txt"), "w") as fh:
            fh.write(_caption(i))


def _canonical(value):
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    raise TypeError(type(value))


def _digest(value, root: str) -> str:
    """sha256 of ``value`` as canonical JSON, the test's own folder spelled ``ROOT`` (reject rows
    and the request name the source files by their absolute path)."""
    text = json.dumps(value, sort_keys=True, default=_canonical).replace(root, "ROOT")
    return hashlib.sha256(text.encode()).hexdigest()


def rows_digest(path: str, root: str) -> str | None:
    """sha256 of a parquet file's rows (values and column names, in order), not of its bytes."""
    if not os.path.exists(path):
        return None
    table = pq.read_table(path)
    return _digest([table.column_names, table.to_pylist()], root)


def file_digest(path: str) -> str | None:
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.exists(path) else None


def snapshot(out: str, root: str) -> dict[str, str | None]:
    """Everything a build decides, by digest; build.json without its times and versions."""
    build = json.load(open(os.path.join(out, "build.json")))
    appends = [
        {k: v for k, v in a.items() if k not in ("seconds", "finished")} for a in build.get("appends", [])
    ]
    kept = {"counts": build["counts"], "weights": build["weights"], "active": build["weights_active"],
            "appends": appends, "request": build["request"]}  # fmt: skip
    found = {
        "build.json": _digest(kept, root),
        "shards.json": file_digest(os.path.join(out, "shards.json")),
        "README.md": file_digest(os.path.join(out, "README.md")),
        "manifest": rows_digest(os.path.join(out, "manifest.parquet"), root),
        "rejects": rows_digest(os.path.join(out, "rejects.parquet"), root),
        "rejects_history": rows_digest(os.path.join(out, "rejects_history.parquet"), root),
        "active.json": file_digest(os.path.join(out, "weights", "active.json")),
    }
    for name in sorted(os.listdir(os.path.join(out, "weights"))):
        if name.endswith(".parquet"):
            found[f"weights/{name}"] = rows_digest(os.path.join(out, "weights", name), root)
    shards = json.load(open(os.path.join(out, "shards.json")))["shards"]
    for entry in shards:  # the shards.json entries are the shards themselves
        assert file_digest(os.path.join(out, entry["path"])) == entry["sha256"], entry["path"]
    return found


EXPECTED: dict[str, dict[str, str | None]] = {
    "append": {
        "README.md": "8679fbd3786293f94b6d226a98dddff693b63efb09bc59e11324e7e68953bb7f",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "7791606a4323cb9afbb810f9b8b1d81c94892f4b66f2d80c5eb6c2c6d324c2c0",
        "manifest": "04775027874eaae084b52a54e0aa13c34b98e2bbfcf63daf10b3cdadcb73964f",
        "rejects": "0285b2e64e2a07a3c10c7af861a3b961df7f31c3053ccd908af147b40a7a340a",
        "rejects_history": None,
        "shards.json": "5da57c591f52d0ed71c720afabbce6cafd9870ab23d62877351cfe0b762258cf",
        "weights/v1.parquet": "25ebb74e8a836170f2708320c1362b2860db058094c1bf81a97fcb95b848f62c",
        "weights/v2.parquet": "39b829f2d4656c145ca15e7552a765a96ef08e6e6ebc40d31abed928df65603d",
    },
    "build": {
        "README.md": "0a098bada17603f28a7b51604f70d92873137c736eb187dff040f65a9a1a01ff",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "42e9910aa9d93bd674455ea62cc299f01efeaae04c999b2ef16919c832b346ca",
        "manifest": "05b456dd6d23a266adfd8e50142489d0a71048c17466dad2f465463e02bd8404",
        "rejects": "69c76cd0524198e66b2191bd25fff9bc10cebf31715c4e935ad5c47763c21d2e",
        "rejects_history": None,
        "shards.json": "13fdfc877f7637372d745898e29867fe44a1b2f419a33ba56e638982dd899090",
        "weights/v1.parquet": "69603e2200503a31df0e4f1b70c670de0ecfd6e7f80b736002d698690d9654a2",
    },
    "retry": {
        "README.md": "8679fbd3786293f94b6d226a98dddff693b63efb09bc59e11324e7e68953bb7f",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "261e44a1999be00d0053e5a7253733cc59ce24f7865e73ebb463d4e1d11a19cc",
        "manifest": "04775027874eaae084b52a54e0aa13c34b98e2bbfcf63daf10b3cdadcb73964f",
        "rejects": "0285b2e64e2a07a3c10c7af861a3b961df7f31c3053ccd908af147b40a7a340a",
        "rejects_history": "a248403be3f67b68a92bf3716b061c6753d091e1979f856cabed24d2310e5c85",
        "shards.json": "5da57c591f52d0ed71c720afabbce6cafd9870ab23d62877351cfe0b762258cf",
        "weights/v1.parquet": "25ebb74e8a836170f2708320c1362b2860db058094c1bf81a97fcb95b848f62c",
        "weights/v2.parquet": "39b829f2d4656c145ca15e7552a765a96ef08e6e6ebc40d31abed928df65603d",
    },
}

SCORED: dict[str, str | None] = {
    "README.md": "1715fa9d51721140b50f08b169c6078f582f198968e2d48b724b294895411118",
    "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
    "build.json": "f2588ee437b450d313cc7e280651e8b89af590dee652a1c1e5e95961923caf27",
    "manifest": "251a6fd8102d93c1d522b8997415e5349720034010dfdfcc4eb2bce004140e0b",
    "rejects": "61ecd67c3e4d7c9e9dc14282b5696c7857af98606a902fd751c60670b10aa836",
    "rejects_history": None,
    "shards.json": "d663791bc90b0ed41c1cbea0444a27b4b8c80b5ad1b4121a7520927a9dfc4a30",
    "weights/v1.parquet": "36e65be5ac0afde69430df481767fa942cec8b5e1f63a0f83eab2625246a6c12",
}


@pytest.fixture(scope="module")
def golden(corpus, ray_cluster, tmp_path_factory) -> dict[str, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("golden")
    names = sorted(os.listdir(corpus))
    a, b = str(root / "a"), str(root / "b")
    _add(a, corpus, names[FIRST], 0)
    _add(b, corpus, names[SECOND], 100)
    shutil.copy(os.path.join(corpus, names[3]), os.path.join(a, "copy_of_three.jpg"))  # exact duplicate
    sketch = os.path.join(os.path.dirname(corpus), "sketches", "style2paints_sketch_002.jpg")
    shutil.copy(sketch, os.path.join(a, "a_sketch.jpg"))
    cfg = write_config(str(root / "build.toml"), CONFIG)
    out = str(root / "out")
    sources = [f"a={a}", f"b={b}"]
    steps: dict[str, dict[str, str | None]] = {}

    res = cli("build", *sources, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr
    steps["build"] = snapshot(out, str(root))

    weights = write_config(str(root / "weights.toml"), REWEIGHT)
    res = cli("reweight", out, "--config", weights, "--name", "v2")
    assert res.returncode == 0, res.stderr
    for i, name in enumerate(names[LATER]):  # the rest of the corpus arrives in both folders
        _add(a if i % 2 == 0 else b, corpus, [name], 200 + i)
    res = cli("build", *sources, "--out", out, "--config", cfg, "--append", "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr
    steps["append"] = snapshot(out, str(root))

    res = cli("build", *sources, "--out", out, "--config", cfg, "--retry", "all", "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr
    steps["retry"] = snapshot(out, str(root))
    assert cli("verify", out).returncode == 0
    if os.environ.get("LINEPAIRS_GOLDEN_PRINT"):
        print("\nEXPECTED = " + json.dumps(steps, indent=4, sort_keys=True))
    return steps


@pytest.fixture(scope="module")
def scored(corpus, ray_cluster, tmp_path_factory) -> dict[str, str | None]:
    """A build whose scan runs the learned scorers (seeded small checkpoints in the published
    layouts): the tagger fills the tags of untagged images, the aesthetic score feeds the quality."""
    from .scorer_checkpoints import write_aesthetic, write_wd_tagger

    root = tmp_path_factory.mktemp("golden_scored")
    write_wd_tagger(str(root / "wd"), "vit", seed=11)
    write_aesthetic(str(root / "aesthetic"), seed=5)
    src = str(root / "src")
    os.makedirs(src)
    for name in sorted(os.listdir(corpus))[::3]:
        shutil.copy(os.path.join(corpus, name), os.path.join(src, name))
    cfg = write_config(
        str(root / "build.toml"),
        f'[scorers.wd_tagger]\nweights = "{root / "wd"}"\nthreshold = 0.5\nbatch_size = 3\n'
        f'[scorers.aesthetic]\nweights = "{root / "aesthetic"}"\n'
        "[quality]\naesthetic_weight = 1.0\n[shards]\nsamples_per_shard = 3\n",
    )
    out = str(root / "out")
    res = cli("build", src, "--out", out, "--config", cfg, "-q", address=ray_cluster)
    assert res.returncode == 0, res.stderr
    found = snapshot(out, str(root))
    if os.environ.get("LINEPAIRS_GOLDEN_PRINT"):
        print("\nSCORED = " + json.dumps(found, indent=4, sort_keys=True))
    return found


@pytest.mark.parametrize("step", ["build", "append", "retry"])
def test_build_bytes_are_the_recorded_ones(golden, step):
    assert golden[step] == EXPECTED[step]


def test_scored_build_bytes_are_the_recorded_ones(scored):
    assert scored == SCORED
