"""Object-store faults against real moto servers: a wrong secret, a missing bucket, an endpoint that
is not there or dies mid-build. Each is one line naming the URL (never the secret), exit 2; and
``audit``/``verify`` tell an outage from a build that is not finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from .helpers import REPO, THREE_IMAGES, corpus_folder, write_config
from .moto_server import free_port, start_moto, stop

SECRET = "wr0ng-s3cr3t-never-printed-91c2"
BUCKET = "hostile-bucket"


def run(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=REPO, env={**os.environ, **env})  # fmt: skip
    assert SECRET not in res.stdout + res.stderr, "the secret key was printed"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return res


def one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-1000:], res.stderr[-2000:])
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A moto server that checks credentials: a user with a key allowed everything, and a bucket."""
    import boto3

    tmp = tmp_path_factory.mktemp("guarded")
    # The first 4 requests need no credentials: the user, its key, its policy and the bucket.
    proc, endpoint, _ = start_moto(tmp, INITIAL_NO_AUTH_ACTION_COUNT="4")
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")  # fmt: skip
        iam.create_user(UserName="builder")
        key = iam.create_access_key(UserName="builder")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="builder", PolicyName="all", PolicyDocument=json.dumps(policy))
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"]).create_bucket(Bucket=BUCKET)  # fmt: skip
        good = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_REGION": "us-east-1"}  # fmt: skip
        yield good
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def src(corpus, tmp_path_factory):
    return corpus_folder(corpus, tmp_path_factory.mktemp("store-src"), THREE_IMAGES)


def test_a_wrong_secret_is_one_line_for_every_command(guarded, src):
    """Was: 56 lines ending in a PermissionError without errno; audit said "not a finished build"."""
    bad = {**guarded, "AWS_SECRET_ACCESS_KEY": SECRET}
    out = f"s3://{BUCKET}/pairs"
    for args in (("build", src, "--out", out, "-q"), ("verify", out), ("audit", out), ("reweight", out)):
        line = one_line(run(*args, env=bad))
        assert out in line and "refused access" in line and "Forbidden" in line, (args[0], line)
    good = run("verify", out, env=guarded)  # the same store with the right secret: nothing is there yet
    assert good.returncode == 1 and "not a finished build" in good.stdout


def test_a_missing_bucket_is_one_line(guarded, src):
    """Was: 62 lines (FileNotFoundError: The specified bucket does not exist)."""
    out = "s3://no-such-bucket-here/pairs"
    for args in (("build", src, "--out", out, "-q"), ("verify", out), ("audit", out)):
        line = one_line(run(*args, env=guarded))
        assert out in line and "no-such-bucket-here" in line and "does not exist" in line, (args[0], line)


def test_audit_tells_an_outage_from_an_unfinished_build(tmp_path, src):
    """Nothing listens at the endpoint: "does not answer", not "not a finished build"."""
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}  # fmt: skip
    out = f"s3://{BUCKET}/pairs"
    for args in (("audit", out), ("verify", out), ("build", src, "--out", out, "-q")):
        line = one_line(run(*args, env=env, timeout=120))
        assert out in line and "does not answer" in line and "not a finished build" not in line, line


def test_the_endpoint_dying_mid_build_is_one_line(tmp_path, src):
    """Was: 172 lines. The store goes away while the shards are being written."""
    import boto3

    proc, endpoint, _ = start_moto(tmp_path)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_REGION": "us-east-1"}  # fmt: skip
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key=SECRET)  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    cfg = write_config(str(tmp_path / "c.toml"), "[scan]\nchunk_size = 1\n[shards]\nsamples_per_shard = 1\n")
    out = f"s3://{BUCKET}/dies"
    build = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "build", src, "--out", out, "--config", cfg, "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, **env})  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not any(
            "/shards/" in o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        ):
            assert build.poll() is None, build.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no shard was ever written"
            time.sleep(0.1)
    finally:
        stop(proc)  # the endpoint dies
    _, err = build.communicate(timeout=300)
    assert SECRET not in err and "Traceback" not in err, err[-3000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert build.returncode == 2 and len(lines) == 1, err[-3000:]
    assert out in lines[0] and "does not answer" in lines[0] and "run the same command again" in lines[0]


def test_a_file_gone_in_an_outage_is_the_outage_not_a_missing_bucket(tmp_path, monkeypatch):
    """Was (a race in CI): the endpoint died while the build read back plan.parquet, s3fs answered
    "not found", and because the bucket's *name* holds the word "bucket" the one line said the bucket
    did not exist. Now only the store's own words mean a missing bucket, and a command failing on a
    missing file of a URL OUT probes the store again: an outage is said as one."""
    import argparse

    import boto3

    from groundwork.filesystems import storage_fault
    from pipelines.commands.storage import outage_line

    assert storage_fault(FileNotFoundError(f"{BUCKET}/dies/plan.parquet")) is None
    assert "does not exist" in storage_fault(FileNotFoundError("The specified bucket does not exist"))
    proc, endpoint, _ = start_moto(tmp_path)
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(out=f"s3://{BUCKET}/gone", storage_option=[])
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        assert outage_line(args) is None  # the store answers: a missing file stays what it is
    finally:
        stop(proc)
    line = outage_line(args)
    assert line is not None and args.out in line and "does not answer" in line and SECRET not in line, line
    assert outage_line(argparse.Namespace(out=str(tmp_path), storage_option=[])) is None  # a local OUT
