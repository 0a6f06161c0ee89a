"""``linepairs train --init MODEL`` end to end on a real demo build: a random-weight SD-1.5-shaped
single file (narrow widths, made here), its text encoder and VAE, the latent cache, sampling,
``export-model`` loaded back by diffusers, and the one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipelines.cli import main

from .helpers import REPO
from .wnet_build import shared_demo_build
from .wnet_checkpoints import make_sd, write_ldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SD_TOML = """preset = "sd"
name = "sd-test"
[model]
sketch_channels = [32, 32, 64, 64]
sketch_blocks = 1
[train]
batch_size = 4
lr = 0.0001
log_every = 1
checkpoint_every = 2
sample_every = 2
eval_every = 0
"""


@pytest.fixture(scope="module")
def build(corpus, ray_cluster, tmp_path_factory) -> str:
    return shared_demo_build(corpus, tmp_path_factory)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15")
    model = make_sd(str(root / "anything"), "sd1", seed=3)
    return model, write_ldm(model, str(root / "anything-v3-like.safetensors"))


@pytest.fixture(scope="module")
def sd_run(build, sd, tmp_path_factory):
    """``linepairs train OUT --run RUN --init MODEL.safetensors --tokenizer ... --cache-latents``."""
    model, single = sd
    root = tmp_path_factory.mktemp("sdrun")
    (root / "sd-test.toml").write_text(SD_TOML)
    run = str(root / "run")
    args = ["train", build, "--run", run, "--init", single, "--tokenizer", model.folder, "--config",
            str(root / "sd-test.toml"), "--steps", "2", "--cache-latents", "-q"]  # fmt: skip
    assert main(args) == 0
    return root, run, args


def test_init_from_a_single_file_keeps_its_parts_and_trains(sd, sd_run):
    model, single = sd
    root, run, args = sd_run
    for name in ("vae", "tokenizer", "text_encoder"):
        assert os.path.isdir(os.path.join(run, "components", name))
    record = json.load(open(os.path.join(run, "init.json")))
    assert record["recipe"]["base"] == single and single in record["files"]
    assert record["unet"]["conv_in.weight"]["from"] == [
        {"file": single, "key": "model.diffusion_model.input_blocks.0.0.weight"}
    ]
    assert set(record["parts"]) == {"vae", "text"}
    run_json = json.load(open(os.path.join(run, "run.json")))
    assert run_json["parts"]["text"] == "clip" and run_json["parts"]["vae"] == "components/vae"
    ckpt = os.path.join(run, "checkpoints", "step-00000002")
    weights = load_file(os.path.join(ckpt, "model.safetensors"))
    # the frozen text encoder is not in the checkpoint; the UNet, sketch encoder and connections are
    assert not any(k.startswith("text.") for k in weights) and "unet.conv_in.weight" in weights
    assert any(k.startswith("connections.skips.") for k in weights)
    assert os.path.isfile(os.path.join(run, "samples", "step-00000002.png"))
    # a re-run resumes (to 3 steps)
    args = [*args[: args.index("--steps")], "--steps", "3", "--cache-latents", "-q"]
    assert main(args) == 0
    assert [
        r["step"] for r in json.loads("[" + ",".join(open(os.path.join(run, "metrics.jsonl"))) + "]")
    ] == [1, 2, 3]


def test_latent_cache_is_per_shard_checked_by_sha256_and_reused(build, sd, sd_run, capsys):
    from wnet.data import decode_at
    from wnet.latents import LatentCache
    from wnet.space import LatentSpace, images_to_tensor

    root, run, args = sd_run
    shards = json.load(open(os.path.join(build, "shards.json")))["shards"]
    cache_root = os.path.join(root, "latents")  # beside the run
    files = [os.path.join(d, f) for d, _, fs in os.walk(cache_root) for f in fs]
    assert sorted(os.path.basename(f) for f in files) == sorted(s["sha256"] + ".safetensors" for s in shards)
    # the cached latents are the VAE's encoding of each illustration and of its mirror image
    vae = os.path.join(run, "components", "vae")
    cache = LatentCache(cache_root, build, vae, 0, 16)
    space = LatentSpace(vae)
    shard = shards[0]["path"]
    import tarfile

    with tarfile.open(os.path.join(build, shard)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
        data = tar.extractfile(member).read()
    key = member.name[: -len(".jpg")]
    got = cache.get([shard], [key], (32, 32))[0]
    pixels = decode_at(data, (32, 32), (32, 32), True)
    want = space.encode(images_to_tensor(np.stack([pixels, pixels[:, ::-1]]))).numpy()
    assert np.abs(got - want).max() < 1e-5
    # another run on the same build and VAE reuses every file; a cut one is made again
    with open(files[0], "r+b") as fh:
        fh.truncate(os.path.getsize(files[0]) // 2)
    again = [a if a != run else run + "2" for a in args]
    assert main([*again[: again.index("--steps")], "--steps", "1", "--cache-latents"]) == 0
    assert f"1 shard(s) encoded, {len(shards) - 1} reused" in capsys.readouterr().err


def test_sample_export_and_diffusers_loads_the_export(build, sd_run, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from wnet.checkpoint import open_checkpoint
    from wnet.export import load_exported
    from wnet.painter import Painter

    _, run, _ = sd_run
    sketch = np.full((40, 56), 255, np.uint8)
    sketch[10:30, 20] = 0
    cv2.imwrite(str(tmp_path / "s.png"), sketch)
    out = str(tmp_path / "o.png")
    assert main(["sample", run, str(tmp_path / "s.png"), "-o", out, "--steps", "2"]) == 0  # the seed's prompt
    assert cv2.imread(out).shape == (32, 64, 3)  # 40x56 rounded to the W-net's multiple (16)
    target = str(tmp_path / "export")
    assert main(["export-model", run, target]) == 0
    assert "loading snippet" in capsys.readouterr().out
    unet = UNet2DConditionModel.from_pretrained(target, subfolder="unet")
    ema = open_checkpoint(run).weights("ema")
    assert all(torch.equal(v, ema[f"unet.{k}"]) for k, v in unet.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # diffusers warns when it has to rewrite a config
        pipe = StableDiffusionPipeline.from_pretrained(target, safety_checker=None)
    assert pipe.vae.config.latent_channels == 4 and pipe.text_encoder is not None
    written = json.load(open(os.path.join(target, "scheduler", "scheduler_config.json")))
    assert {k: pipe.scheduler.config[k] for k in written if k != "_class_name"} == {
        k: v for k, v in written.items() if k != "_class_name"
    }  # loaded as exported, nothing rewritten
    lines = np.full((1, 32, 32), 255, np.uint8)
    lines[0, 8:24, 16] = 0
    tags = [{"general": ["1girl"]}]
    a = load_exported(target).paint(lines, tags, seed=1)
    b = Painter.from_checkpoint(run).paint(lines, tags, seed=1)
    assert np.array_equal(a, b)
    # the README's snippet runs as written
    snippet = re.search(r"```python\n(.*?)```", open(os.path.join(target, "README.md")).read(), re.S).group(1)
    done = subprocess.run([sys.executable, "-c", snippet + "\nprint(image.shape)"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "(1, 128, 128, 3)" in done.stdout, done.stderr[-2000:]
    assert main(["export-model", run, target]) == 2  # not over an existing export
    assert "exists and is not empty" in capsys.readouterr().err


def test_the_init_family_picks_the_preset(sd):
    from pipelines.commands.train import config_for

    model, single = sd
    ns = argparse.Namespace(config=None, init=single, tokenizer=None)
    cfg = config_for(ns)
    assert cfg.name == "sd" and cfg.init.base == single and cfg.diffusion.prediction == "epsilon"
    assert config_for(argparse.Namespace(config=None, init=None, tokenizer=None)).name == "tiny"


def test_sdxl_takes_each_samples_real_size_and_crop(build, tmp_path):
    """SDXL's size/crop ids come from each sample's original_size and crop_box (not one value per run)."""
    from sharding.loader import batches
    from wnet.parts import make_parts
    from wnet.run import initial_weights
    from wnet.text import sdxl_time_ids
    from wnet.trainer import Trainer, make_prompt
    from wnet.vocab import TagVocab

    from .test_wnet_init import sd_config

    model = make_sd(str(tmp_path / "xl"), "sdxl")
    cfg = sd_config("sdxl", base=model.folder).replace(train={"flip": 0.0, "batch_size": 4})
    vocab = TagVocab.build([], 10)
    run = str(tmp_path / "run")
    os.makedirs(run)
    parts, files = make_parts(cfg, run)
    weights, _ = initial_weights(cfg, parts, vocab, run, files)
    trainer = Trainer(cfg, vocab, parts=parts, run=run, init=weights)
    batch = next(iter(batches(build, 4, seed=0, resampled=False, weighted=False)))
    prompt = make_prompt(trainer, [m["tags"] for m in batch.meta], None, False,
                         [((32, 32), False, m) for m in batch.meta])  # fmt: skip
    want = [sdxl_time_ids(m, (32, 32), False) for m in batch.meta]
    assert prompt.time_ids.tolist() == want
    assert len({tuple(w[:2]) for w in want}) > 1  # the demo images differ in original size
    assert np.isfinite(trainer.train_step(batch)["loss"])


def test_bad_models_are_one_line_errors(build, sd, tmp_path, capsys):
    model, single = sd
    run = str(tmp_path / "r")
    assert main(["train", build, "--run", run, "--init", str(tmp_path / "nope.safetensors"), "-q"]) == 2
    assert "no such model file or folder" in capsys.readouterr().err
    toml = tmp_path / "sd-test.toml"
    toml.write_text(SD_TOML)
    # a single file has no tokenizer: named, with the setting that fixes it
    assert main(["train", build, "--run", run, "--init", single, "--config", str(toml), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "text.tokenizer" in err[0] and "Traceback" not in err[0]

    # a pickle that needs code to load
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"state_dict": {"x": Payload()}}, str(tmp_path / "evil.ckpt"))
    assert (
        main(["train", build, "--run", str(tmp_path / "r2"), "--init", str(tmp_path / "evil.ckpt"), "-q"])
        == 2
    )
    captured = capsys.readouterr()
    assert "weights_only=True" in captured.err and "ran" not in captured.out
    # a latent cache needs a latent space
    assert (
        main(["train", build, "--run", str(tmp_path / "r3"), "--config", "tiny", "--cache-latents", "-q"])
        == 2
    )
    assert "needs a latent space" in capsys.readouterr().err


def test_without_diffusers_train_says_how_to_install_it(tmp_path):
    code = "import sys; sys.modules['diffusers'] = None\nfrom pipelines.cli import main\nsys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "train", str(tmp_path), "--run", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "pip install -c constraints.txt -e ." in lines[0]
