"""OUT on an S3-protocol store: a real moto server started here, reached through the AWS_* variables only.

A build to ``s3://`` gives the same manifest rows and shard bytes as a local build; one SIGKILLed
mid-materialize resumes to the same bytes; verify, audit and the loader read the URL; the secret
key is never printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from sharding.layout import Layout

from .helpers import REPO, kill_when, write_config
from .moto_server import start_moto, stop

CONFIG = "[scan]\nchunk_size = 1\n[shards]\nsamples_per_shard = 1\n"
IMAGES = ("anime2sketch_001.jpg", "sketchkeras_002.jpg", "style2paints_004.jpg", "paintsundo_003.jpg",
          "style2paints_021.png", "danbooregion_004.jpg")  # fmt: skip
SECRET = "s3cr3t-never-printed-7f3a"
BUCKET = "linepairs-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server in its own process; yields the environment that reaches it."""
    proc, endpoint, log = start_moto(tmp_path_factory.mktemp("moto"))
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    env = {**env, "log": log}  # the server's request log (one line per request, with its status)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop(proc)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=REPO, env=env or os.environ.copy())  # fmt: skip
    assert SECRET not in res.stdout + res.stderr, "the secret key was printed"
    return res


def _result(out: str) -> tuple[list[dict], dict]:
    layout = Layout(out)
    return layout.read_parquet(layout.manifest).to_pylist(), layout.read_json(layout.shards_json)


@pytest.fixture(scope="module")
def reference(corpus, ray_cluster, tmp_path_factory):
    """The same request built on a local disk."""
    base = tmp_path_factory.mktemp("s3ref")
    src = base / "src"
    src.mkdir()
    for name in IMAGES:
        shutil.copy(os.path.join(corpus, name), src / name)  # the sources refuse symlinks
    cfg = write_config(str(base / "cfg.toml"), CONFIG)
    out = str(base / "local")
    res = _cli("build", str(src), "--out", out, "--config", cfg, "--address", ray_cluster, "-q")
    assert res.returncode == 0, res.stderr
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    shards = json.load(open(os.path.join(out, "shards.json")))
    return str(src), cfg, manifest, shards


def test_build_on_s3_equals_local_and_reads_back(s3, reference, ray_cluster, tmp_path):
    src, cfg, ref_manifest, ref_shards = reference
    out = f"s3://{BUCKET}/pairs"
    res = _cli("build", src, "--out", out, "--config", cfg, "--address", ray_cluster, "-q")
    assert res.returncode == 0, res.stderr
    assert f"output      {out}" in res.stdout
    manifest, shards = _result(out)
    assert manifest == ref_manifest
    assert shards == ref_shards  # byte-identical tars: same sizes and sha256
    assert _cli("verify", out).returncode == 0
    audit = _cli("audit", out, "--json", "--draws", "200")
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["samples"] == len(ref_manifest)
    # The endpoint as a --storage-option instead of AWS_ENDPOINT_URL.
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    res = _cli("verify", out, "--storage-option", f"endpoint_url={s3['AWS_ENDPOINT_URL']}", env=env)
    assert res.returncode == 0 and res.stdout.strip() == f"{out}: ok", res.stdout + res.stderr
    # The loader reads the URL: one decoded, bucket-pure batch.
    from sharding.loader import batches

    stream = batches(out, 2, seed=1)
    batch = next(iter(stream))
    stream.close()
    assert batch.images.shape[0] == 2 and batch.images.shape[1:3] == (batch.bucket[1], batch.bucket[0])
    # linepairs train reads the URL too (the tiny preset, two steps).
    run = _cli(
        "train",
        out,
        "--config",
        "tiny",
        "--run",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--threads",
        "1",
        "-q",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.load(open(tmp_path / "run" / "run.json"))["build"] == out
    # reweight and train take --storage-option like the other commands (the endpoint given only so)
    option = ("--storage-option", f"endpoint_url={s3['AWS_ENDPOINT_URL']}")
    res = _cli("reweight", out, "--name", "by-option", *option, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert Layout(out).exists(Layout(out).weights_version("by-option"))
    run = _cli("train", out, "--config", "tiny", "--run", str(tmp_path / "run-option"), "--steps", "1",
               "--threads", "1", "-q", *option, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    recorded = json.load(open(tmp_path / "run-option" / "run.json"))
    assert recorded["build"] == out and s3["AWS_ENDPOINT_URL"] not in json.dumps(recorded)
    # Corrupt one shard object: verify names it.
    layout = Layout(out)
    first = layout.shard(ref_shards["shards"][0]["path"])
    layout.write_bytes(first, layout.read_bytes(first)[:-512])
    bad = _cli("verify", out)
    assert bad.returncode == 1 and ref_shards["shards"][0]["path"] in bad.stdout
    # The resume check lists sizes once and hashes the rest: a truncation, then a same-size flip.
    from pipelines.shardcheck import damage

    rel = ref_shards["shards"][0]["path"]
    assert damage(layout, ref_shards["shards"]) == {
        rel: f"{ref_shards['shards'][0]['bytes'] - 512} bytes, {ref_shards['shards'][0]['bytes']} recorded"
    }
    good = open(os.path.join(os.path.dirname(src), "local", rel), "rb").read()
    layout.write_bytes(first, good[:100] + bytes([good[100] ^ 1]) + good[101:])
    assert damage(layout, ref_shards["shards"]) == {rel: "sha256 differs from the recorded one"}
    res = _cli("build", src, "--out", out, "--config", cfg, "--address", ray_cluster, "-q")
    assert res.returncode == 0 and "damaged shard" in res.stderr, res.stderr
    assert _result(out) == (ref_manifest, ref_shards)  # repaired to the same bytes


def test_sigkill_mid_materialize_on_s3_resumes_to_same_bytes(s3, reference, ray_cluster):
    src, cfg, ref_manifest, ref_shards = reference
    out = f"s3://{BUCKET}/killed"
    layout = Layout(out)
    states = layout.path("_state", "shards")
    cmd = [sys.executable, "-m", "pipelines.cli", "build", src, "--out", out, "--config", cfg,
           "--address", ray_cluster, "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    kill_when(proc, lambda: any(True for _ in layout.files(states)), 240, poll=0.05)
    assert not layout.exists(layout.build_json), "the build finished before the kill"
    res = _cli("build", src, "--out", out, "--config", cfg, "--address", ray_cluster, "-q")
    assert res.returncode == 0, res.stderr
    manifest, shards = _result(out)
    assert manifest == ref_manifest
    assert shards == ref_shards
    assert _cli("verify", out).returncode == 0


def test_bad_url_and_option_are_one_line_errors(s3, tmp_path):
    res = _cli("verify", f"s3://{BUCKET}/nothing-here")
    assert res.returncode == 1 and "not a finished build" in res.stdout
    res = _cli("verify", f"s3://{BUCKET}/x", "--storage-option", "novalue")
    assert res.returncode == 2 and "KEY=VALUE" in res.stderr and "Traceback" not in res.stderr


def _upload(folder: str, bucket: str, prefix: str) -> None:
    import boto3

    client = boto3.client("s3")
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            key = f"{prefix}/{os.path.relpath(path, folder)}"
            client.upload_file(path, bucket, key)


def test_sources_on_s3_equal_the_same_sources_on_disk(s3, corpus, ray_cluster, tmp_path):
    """A folder source and an hf-tar dump read from s3:// give the manifest rows and shard bytes of
    the same sources on disk; the tar members are read in place on the store."""
    from .dumps import hf_row, write_parquet, write_tar

    art = tmp_path / "art"
    (art / "sub").mkdir(parents=True)
    shutil.copy(os.path.join(corpus, IMAGES[0]), art / "a.jpg")
    shutil.copy(os.path.join(corpus, IMAGES[1]), art / "sub" / "b.jpg")
    (art / "sub" / "b.txt").write_text("1girl, solo\n")
    (art / "z.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # a reject on both sides
    hf = tmp_path / "hf"
    write_parquet(str(hf / "metadata.parquet"), [hf_row(7001), hf_row(7002), hf_row(7003)])
    members = {f"{7001 + i}.{n.rsplit('.', 1)[1]}": open(os.path.join(corpus, n), "rb").read()
               for i, n in enumerate(IMAGES[2:5])}  # fmt: skip
    write_tar(str(hf / "images" / "0000.tar"), members)
    cfg = write_config(str(tmp_path / "cfg.toml"), CONFIG)
    local = str(tmp_path / "local")
    res = _cli("build", f"art={art}", f"hf=hf-tar:{hf}", "--out", local, "--config", cfg,
               "--address", ray_cluster, "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    _upload(str(art), BUCKET, "sources/art")
    _upload(str(hf), BUCKET, "sources/hf")
    shutil.rmtree(art)  # the S3 build cannot fall back to the local copies
    shutil.rmtree(hf)
    out = str(tmp_path / "from-s3")
    res = _cli("build", f"art=s3://{BUCKET}/sources/art", f"hf=s3://{BUCKET}/sources/hf", "--out", out,
               "--config", cfg, "--address", ray_cluster, "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest, shards = _result(out)
    ref_manifest, ref_shards = _result(local)
    rejects = pq.read_table(os.path.join(out, "rejects.parquet")).to_pylist()
    ref_rejects = pq.read_table(os.path.join(local, "rejects.parquet")).to_pylist()
    why = lambda rows: sorted((r["key"], r["reason"], r["detail"]) for r in rows)  # noqa: E731
    assert why(rejects) == why(ref_rejects)
    assert manifest == ref_manifest
    assert shards == ref_shards  # byte-identical tars: same sizes and sha256
    assert len(manifest) >= 3
    # The tar was read in place: every GET of it was a ranged one (206 Partial Content), none whole.
    with open(s3["log"]) as fh:
        tar_gets = [line for line in fh if "GET /" in line and "/sources/hf/images/0000.tar" in line]
    assert tar_gets and all('" 206 ' in line for line in tar_gets), tar_gets[:5]
    assert f"s3://{BUCKET}/sources/art/z.jpg" in [r["location"] for r in rejects]
    # the kind is detected on the store too, and a missing URL is one line
    res = _cli("build", f"s3://{BUCKET}/sources/nothing", "--out", str(tmp_path / "x"), "--config", cfg)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    # [[sources]] URLs in the config are opened with the command's --storage-option settings (the
    # endpoint given only there), not at config load with the AWS_* variables alone.
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    tables = CONFIG + f'\n[[sources]]\nname = "art"\npath = "s3://{BUCKET}/sources/art"\n'
    cfg2 = write_config(str(tmp_path / "cfg-sources.toml"), tables)
    out2 = str(tmp_path / "from-config")
    res = _cli("build", "--out", out2, "--config", cfg2, "--address", ray_cluster, "-q",
               "--storage-option", f"endpoint_url={s3['AWS_ENDPOINT_URL']}", env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    art_rows = [r for r in ref_manifest if r["source"] == "art"]
    assert sorted(r["key"] for r in _result(out2)[0]) == sorted(r["key"] for r in art_rows)
