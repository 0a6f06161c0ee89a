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
        "README.md": "2aa24a889885602fcf45fcf22debd0f0fad3fa46f713926d1e7af6c3e55a4cfb",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "6de8e8e373c0fae1a33bbfe0e5919c62589182d880467aa911666bd12be9bf2c",
        "manifest": "242cab49014c6a037f25e43743da9a6468c34cc7cf91d3f051d90cff4c2389cb",
        "rejects": "b6598ac7f7cbddc793ed474302858d8dcb1c8f3214b4dc9f8bee146de5e4bb80",
        "rejects_history": None,
        "shards.json": "45462d8b8c4a1e0a5e8b6cfe1ca5578ef6e9fc665ddac609679ee74d59c39c34",
        "weights/v1.parquet": "c0af0afbe7cfacac3ac604413fa771c71073ed738acce0cba03e6b32e8462090",
        "weights/v2.parquet": "3f73c3fad79c75a087d02889babab57e421c8317673219b59e0015b9c7899527",
    },
    "build": {
        "README.md": "7ee504e858b0b6b5a6c3bf89c8b8395b87d6ee42d9c4b50841f59f8a78a4e315",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "42e9910aa9d93bd674455ea62cc299f01efeaae04c999b2ef16919c832b346ca",
        "manifest": "5be2704313c7d23b4437789673dfce347086d09a42d8e18b70f85646d48f4129",
        "rejects": "2e839cc9a4871f4872b245ba33f6a118b05e8a00558598f21010b8e0dafc27cb",
        "rejects_history": None,
        "shards.json": "d70ed1848b632d0e48783fe41f2643d52fa243ef9c7ac2be98ec31ac7fafd9b3",
        "weights/v1.parquet": "0f86f63a6b82e3914d9dbeeb2ceaf0d9e01b2331dcf6175ea9c311534ccc5ca5",
    },
    "retry": {
        "README.md": "2aa24a889885602fcf45fcf22debd0f0fad3fa46f713926d1e7af6c3e55a4cfb",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "c1c7857de6826eac0b8284176d90cc165284604c265e86f71b60ba771a2942d2",
        "manifest": "242cab49014c6a037f25e43743da9a6468c34cc7cf91d3f051d90cff4c2389cb",
        "rejects": "b6598ac7f7cbddc793ed474302858d8dcb1c8f3214b4dc9f8bee146de5e4bb80",
        "rejects_history": "13918d7cd8ea7ec67ccdd4946ba4cf756ca3aa076468a5c0a4b5f3822c9b414a",
        "shards.json": "45462d8b8c4a1e0a5e8b6cfe1ca5578ef6e9fc665ddac609679ee74d59c39c34",
        "weights/v1.parquet": "c0af0afbe7cfacac3ac604413fa771c71073ed738acce0cba03e6b32e8462090",
        "weights/v2.parquet": "3f73c3fad79c75a087d02889babab57e421c8317673219b59e0015b9c7899527",
    },
}

SCORED: dict[str, str | None] = {
    "README.md": "73d4974d3b6f134ccfe084c8d601e2b43142308c6de30018a880112462431a5f",
    "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
    "build.json": "f2588ee437b450d313cc7e280651e8b89af590dee652a1c1e5e95961923caf27",
    "manifest": "5a9c325dd38c956169195e27c18427a48876c2e07660617f09d1500d8ed7cea3",
    "rejects": "5337efa1b83a066a8c97a449853c7655d0f3d0cceaf4d4c9b2cbaf82f6a943b7",
    "rejects_history": None,
    "shards.json": "1d3d5f6c5c03ffbcaa3b2b0badb41afd2c5caea9fb2b897120c3f6511db3cb63",
    "weights/v1.parquet": "35330abbee396c44a74ecc803ea32a9d9b2577b055e45495f7633316735b55ab",
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
