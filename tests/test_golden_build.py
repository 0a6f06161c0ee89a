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
        "README.md": "d685166ef8483d9ce867a0ef1e21d35da7420216a8553ff6d9725621f297dd46",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "714d9e0fc6f3ccfd093ec13e693672bd02ef57a90c1d1848e887d2e6c1d05cbd",
        "manifest": "1fd460ae86029fecd0145b91132148409afbd3b163a629aa727526c7c3bdf679",
        "rejects": "e164128ee01c092062e2f08a23a17e60e30db0a2c363474987e023d6160649e7",
        "rejects_history": None,
        "shards.json": "939e421113e38f124e2bb92a048b5e0e3c5174f1b129a06b4b901ddd2385385d",
        "weights/v1.parquet": "2d1934fdc39d40e22bc740253bc75995fda73a417d3de965ed254f36e52584bc",
        "weights/v2.parquet": "352865e9b71b28fcd3c49139034cc8a9ba950e68fe4dec4e5030f999d25d4c12",
    },
    "build": {
        "README.md": "1b8e52630d50d714ac3d650c41efc03fdcd38e2b0c0b6a0c162cfb7438082cf1",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "ed382e44cae5299e42bb92ac3e31539609f7b2707b2aae3bcfa2e07f8acaebf0",
        "manifest": "7323d03ae0f3206434fa23815de52e25153d09154c4f5ccd77a74e6c5c07d2a8",
        "rejects": "bbb5caf353d63df0fbff284ed7a43425a69b753fdbed23ac29d46d6fea00f55d",
        "rejects_history": None,
        "shards.json": "a1e1bb0c8f76af151e527244d21d88654ec20f2ae26c486b6cdc548af8681552",
        "weights/v1.parquet": "335ac3c9aadffe258fe7d6471803ca5302dfcc258b051b299329739819cadf0f",
    },
    "retry": {
        "README.md": "d685166ef8483d9ce867a0ef1e21d35da7420216a8553ff6d9725621f297dd46",
        "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
        "build.json": "99dd8dbfd0acf57dd25b14c72097f90b88376be7908e033a8dd748d11b574dd4",
        "manifest": "1fd460ae86029fecd0145b91132148409afbd3b163a629aa727526c7c3bdf679",
        "rejects": "e164128ee01c092062e2f08a23a17e60e30db0a2c363474987e023d6160649e7",
        "rejects_history": "6c5d5323fa7f0c915f3887e5c222e1f0056a6d8c136d4caa60bab53e8fa2e0ad",
        "shards.json": "939e421113e38f124e2bb92a048b5e0e3c5174f1b129a06b4b901ddd2385385d",
        "weights/v1.parquet": "2d1934fdc39d40e22bc740253bc75995fda73a417d3de965ed254f36e52584bc",
        "weights/v2.parquet": "352865e9b71b28fcd3c49139034cc8a9ba950e68fe4dec4e5030f999d25d4c12",
    },
}

SCORED: dict[str, str | None] = {
    "README.md": "5cb8ee50bdfab1117e74247a5d4fbfacac15c623a2db6fdc771bf652b959f147",
    "active.json": "e2615a41cc356d3d0d86b9a453b15f51d1af9a3e8c02c5d98f6fec1fc87f01df",
    "build.json": "f2588ee437b450d313cc7e280651e8b89af590dee652a1c1e5e95961923caf27",
    "manifest": "3b991849ae85c931d056e007422e0afb3bfe0a01c51e100d07b3124c878e0092",
    "rejects": "37038e2b0c73a29f228c6917625b6905972bba4b7410fd58553aa61cf61aa8e3",
    "rejects_history": None,
    "shards.json": "3de0c570b2935fe82e8232681d5478d3a209be08fb68229e96ef5715d6b3b288",
    "weights/v1.parquet": "e6f85b6c53778d0e8ec274a4fdcd68b93d01aebc462280466e566e2946075c05",
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
