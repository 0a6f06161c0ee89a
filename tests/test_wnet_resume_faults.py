"""A damaged training run resumes from the previous good checkpoint, naming what it skipped:
a cut model.safetensors, a garbage optimizer.pt, a torn or missing state.json, a torn metrics line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from wnet.config import load_config
from wnet.run import TrainRequest, read_metrics, train

from .helpers import REPO
from .wnet_build import shared_demo_build, tiny_toml

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_run(corpus, ray_cluster, tmp_path_factory):
    build = shared_demo_build(corpus, tmp_path_factory)
    folder = tmp_path_factory.mktemp("resume")
    cfg = tiny_toml(str(folder / "t.toml"), checkpoint_every=2, keep_checkpoints=3)
    run = str(folder / "run")
    train(TrainRequest(build, run, load_config(cfg), steps=4, show_progress=False))
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["step-00000002", "step-00000004"]
    return build, cfg, run


def damaged(base_run, tmp_path, damage) -> str:
    run = str(tmp_path / "run")
    shutil.copytree(base_run[2], run)
    damage(os.path.join(run, "checkpoints", "step-00000004"), run)
    return run


def cut(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


CASES = {
    "model.safetensors": lambda ck, run: cut(os.path.join(ck, "model.safetensors")),
    "optimizer.pt": lambda ck, run: open(os.path.join(ck, "optimizer.pt"), "wb").write(
        b"\x80\x04garbage" * 50
    ),
    "state.json": lambda ck, run: cut(os.path.join(ck, "state.json")),
    "no state.json": lambda ck, run: os.remove(os.path.join(ck, "state.json")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_falls_back_to_the_previous_checkpoint(base_run, tmp_path, capfd, case):
    build, cfg, _ = base_run
    run = damaged(base_run, tmp_path, CASES[case])
    result = train(TrainRequest(build, run, load_config(cfg), steps=6, show_progress=False))
    err = capfd.readouterr().err
    assert result.step == 6
    assert case.removeprefix("no ") in err and "resuming from" in err and "step-00000002" in err, err
    assert "weights_only=False" not in err and "Traceback" not in err
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 7))  # steps 3-4 redone once, not from 0


def test_torn_metrics_line_does_not_stop_resume(base_run, tmp_path):
    build, cfg, _ = base_run
    run = damaged(base_run, tmp_path, lambda ck, run: None)
    with open(os.path.join(run, "metrics.jsonl"), "a") as fh:
        fh.write('{"step": 5, "loss": 0.')  # a kill mid-write
    result = train(TrainRequest(build, run, load_config(cfg), steps=6, show_progress=False))
    assert result.step == 6 and [r["step"] for r in read_metrics(run)] == list(range(1, 7))


def test_no_readable_checkpoint_is_one_line(base_run, tmp_path):
    build, cfg, _ = base_run

    def all_bad(ck, run):
        for name in os.listdir(os.path.join(run, "checkpoints")):
            cut(os.path.join(run, "checkpoints", name, "model.safetensors"))

    run = damaged(base_run, tmp_path, all_bad)
    cmd = [sys.executable, "-m", "pipelines.cli", "train", build, "--config", cfg, "--run", run, "--steps", "6",
           "--threads", "1", "-q"]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "model.safetensors" in lines[0], res.stderr[-3000:]


def test_a_preparation_cut_short_is_redone(base_run, tmp_path):
    """Killed while RUN was prepared: init.safetensors torn, no run.json yet. The same command starts over."""
    build, cfg, _ = base_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "init.safetensors").write_bytes(b"\x00" * 100)
    (run / ".tmp-init.safetensors").write_bytes(b"\x00" * 10)  # an older writer's temporary name
    (run / "init.json.tmp-123-abcdef12").write_bytes(b"{")  # groundwork.files' (TMP_MARK)
    result = train(TrainRequest(build, str(run), load_config(cfg), steps=1, show_progress=False))
    assert result.step == 1 and (run / "run.json").is_file() and (run / "init.json").is_file()
    assert not (run / ".tmp-init.safetensors").exists() and not (run / "init.json.tmp-123-abcdef12").exists()
