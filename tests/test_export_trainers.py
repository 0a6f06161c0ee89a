"""The trainers' own code reads our exports of a real build (two sources of the shared illustrations,
unequal sizes, a ``[weights.shares]`` policy: tests/export_builds.py).

- diffusers: ``examples/controlnet/train_controlnet.py`` from ../shared/trainers, unchanged, runs 2
  steps on CPU against the export with a tiny Stable Diffusion made offline here, and saves its
  ControlNet.
- kohya sd-scripts: the export's ``dataset.toml`` goes through sd-scripts' own
  ``library/config_util.py`` (ConfigSanitizer, BlueprintGenerator,
  generate_dataset_group_by_blueprint) with ControlNet subsets, in sd-scripts' own environment
  (tests/sdscripts_env.py: transformers 4.54.1 and its other pins, cached); the buckets are built
  and every pair is loaded through the dataset's ``__getitem__``. ``train_control_net.py`` itself
  cannot run on a tiny model: sd-scripts loads the UNet into its own ``original_unet`` whose blocks
  are fixed at SD 1.x's 320/640/1280 channels (``load_state_dict`` fails on any smaller UNet), and a
  full-size SD 1.5 is ~4 GB of random weights and ~10 GB of CPU training memory, which this shared
  2-core machine cannot spare for a test.
- The realised share of draws per source and tier stays within 2 percentage points of the intended
  one for every target with the default ``--repeat-levels``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines.export import ExportRequest, run_export

from .export_builds import SHARES, corpus_two_sources
from .sdscripts_env import sd_scripts_python
from .tiny_sd import write_tiny_sd, write_tokenizer


@pytest.fixture(scope="module")
def out(corpus, ray_cluster, tmp_path_factory) -> str:
    return corpus_two_sources(corpus, tmp_path_factory)


def _export(out: str, dest: str, target: str, **options) -> dict:
    run_export(ExportRequest(out, dest, target, show_progress=False, **options))
    return json.load(open(os.path.join(dest, "export.json")))


@pytest.mark.parametrize("target", ["kohya", "simpletuner", "ai-toolkit", "diffusers"])
def test_realised_shares_within_two_points_with_the_default_levels(out, tmp_path, target):
    report = _export(out, str(tmp_path / target), target)
    shares = report["shares"]
    assert {k: round(v["intended"], 6) for k, v in shares["source"].items()} == SHARES
    for dim in ("source", "tier"):
        for name, share in shares[dim].items():
            assert abs(share["realised"] - share["intended"]) <= 0.02, (dim, name, share)
    if target != "diffusers":
        assert len(report["repeats"]["levels"]) <= 8  # the default --repeat-levels
    rows = pq.read_table(os.path.join(tmp_path / target, "samples.parquet")).to_pylist()
    assert sum(r["repeats"] for r in rows if r["fate"] == "train") == report["repeats"]["draws"]


def test_diffusers_train_controlnet_runs_two_steps_on_the_export(out, shared, tmp_path):
    pytest.importorskip("diffusers")
    script = os.path.join(shared, "trainers", "diffusers", "examples", "controlnet", "train_controlnet.py")
    if not os.path.exists(script):
        pytest.skip(f"{script} is absent")
    dest = str(tmp_path / "dest")
    _export(out, dest, "diffusers", val=2)
    model = write_tiny_sd(str(tmp_path / "tiny-sd"))
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
        "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    controlnet = tmp_path / "controlnet"
    args = [
        sys.executable, script, f"--pretrained_model_name_or_path={model}", f"--output_dir={controlnet}",
        f"--train_data_dir={dest}", "--image_column=image", "--conditioning_image_column=conditioning_image",
        "--caption_column=text", "--resolution=64", "--train_batch_size=2", "--max_train_steps=2",
        "--checkpointing_steps=1000", f"--cache_dir={tmp_path / 'hf-cache'}", "--seed=0",
        "--dataloader_num_workers=0", "--mixed_precision=no",
    ]  # fmt: skip
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (controlnet / "diffusion_pytorch_model.safetensors").stat().st_size > 0
    assert json.load(open(controlnet / "config.json"))["_class_name"] == "ControlNetModel"


def test_sd_scripts_config_util_builds_the_buckets_and_loads_every_pair(out, shared, tmp_path):
    sd_scripts = os.path.join(shared, "trainers", "sd-scripts")
    if not os.path.isdir(sd_scripts):
        pytest.skip(f"{sd_scripts} is absent")
    python, created = sd_scripts_python()
    print(f"sd-scripts environment: {python} ({f'made in {created:.1f} s' if created else 'cached'})")
    dest = str(tmp_path / "dest")
    report = _export(out, dest, "kohya", val=2)
    tokenizers = str(tmp_path / "tokenizers")
    write_tokenizer(os.path.join(tokenizers, "openai_clip-vit-large-patch14"))  # sd-scripts' cache layout
    loader = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdscripts_load.py")
    env = {**os.environ, "PYTHONPATH": sd_scripts, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [python, loader, os.path.join(dest, "dataset.toml"), tokenizers, "64"],
        capture_output=True, text=True, env=env, cwd=sd_scripts, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout)
    rows = {
        os.path.join(dest, r["image"]): r
        for r in pq.read_table(os.path.join(dest, "samples.parquet")).to_pylist()
        if r["fate"] == "train"
    }
    assert set(found["images"]) == set(rows)  # every training pair, nothing else (not validation/)
    for path, image in found["images"].items():
        row = rows[path]
        w, h = (int(v) for v in row["bucket"].split("x"))
        assert image["bucket"] == image["size"] == [w, h]  # sd-scripts keeps our bucket as it is
        assert image["conditioning"] == os.path.join(dest, row["conditioning"])
        assert image["repeats"] == row["repeats"] and image["keep_tokens"] == row["keep_tokens"]
        assert image["caption"] == row["caption"]  # "" where there is no caption file
        drawn = found["drawn"][path]
        assert drawn["count"] == row["repeats"]  # draws per epoch: the weights
        assert drawn["image_chw"] == drawn["conditioning_chw"] == [3, h, w]
        assert sorted(drawn["caption"].split(", ")) == sorted(row["caption"].split(", "))  # shuffled tags
    assert found["batches"] == report["repeats"]["draws"]
