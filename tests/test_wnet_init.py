"""Starting a W-net from Stable Diffusion weights: random-weight SD-shaped checkpoints (narrow widths),
made here, in the diffusers-folder and the single-file LDM layouts; the init recipe; strictness."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors.torch import save_file

from wnet.config import PRESETS, WnetConfigError
from wnet.parts import build_wnet, make_parts
from wnet.run import initial_weights
from wnet.sources import SourceError, open_source
from wnet.text import Prompt
from wnet.trainer import Trainer
from wnet.vocab import TagVocab

from .wnet_checkpoints import make_sd, write_ldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = TagVocab.build([{"general": ["warm", "cool"]}], 10)
SKETCH = {"sketch_channels": [32, 32, 64, 64], "sketch_blocks": 1}


def sd_config(family: str = "sd1", **init):
    preset = {"sd1": "sd", "sd2": "sd2", "sdxl": "sdxl"}[family]
    sketch = SKETCH if family != "sdxl" else {"sketch_channels": [32, 64, 64], "sketch_blocks": 1}
    return PRESETS[preset].replace(model=sketch, init=init)


def trainer_for(cfg, run: str) -> tuple[Trainer, dict]:
    """What ``linepairs train`` prepares (components, step-0 weights, init.json), as a Trainer."""
    os.makedirs(run, exist_ok=True)
    parts, files = make_parts(cfg, run)
    weights, record = initial_weights(cfg, parts, VOCAB, run, files)
    return Trainer(cfg, VOCAB, parts=parts, run=run, init=weights), record


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    out = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        sd = make_sd(str(root / name), "sd1", seed=seed)
        out[name] = (sd, write_ldm(sd, str(root / f"{name}.safetensors")))
    return out


def _inputs(sd, n=2, size=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, size, size, generator=g)
    t = torch.tensor([10, 700])[:n]
    sketch = torch.rand(n, 1, size * 2, size * 2, generator=g)  # the test VAE's stride is 2
    return x, t, sketch


def _plain(sd, x, t, captions, time_ids=None):
    """The source model itself: its UNet on its own text encoder's states (no W-net code)."""
    hidden, pooled = [], None
    with torch.no_grad():
        for tok, enc in zip(sd.tokenizers, sd.text_encoders, strict=True):
            ids = tok(
                captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            out = enc(ids, output_hidden_states=True)
            hidden.append(out.last_hidden_state if sd.family != "sdxl" else out.hidden_states[-2])
            pooled = getattr(out, "text_embeds", None)
        added = {"text_embeds": pooled, "time_ids": time_ids} if sd.family == "sdxl" else None
        return sd.unet(x, t, torch.cat(hidden, -1), added_cond_kwargs=added).sample


@pytest.mark.parametrize("layout", ["diffusers", "single-file"])
def test_an_sd15_shaped_checkpoint_loads_and_at_step_zero_the_wnet_is_its_unet(models, tmp_path, layout):
    sd, single = models["a"]
    path = sd.folder if layout == "diffusers" else single
    cfg = sd_config(base=path)
    if layout == "single-file":  # a single file has no tokenizer: any SD folder's serves
        cfg = cfg.replace(text={"tokenizer": sd.folder})
    trainer, record = trainer_for(cfg, str(tmp_path / "run"))
    model = trainer.model.eval()
    own = sd.unet.state_dict()
    assert all(torch.equal(model.unet.state_dict()[k], v) for k, v in own.items())
    assert trainer.parts.text == "clip" and trainer.space.channels == 4 and trainer.space.stride == 2
    # text encoder, tokenizer and VAE came with it (saved once in RUN/components/)
    for name in ("vae", "tokenizer", "text_encoder"):
        assert os.path.isdir(tmp_path / "run" / "components" / name)
    enc = model.text.encoders[0].state_dict()
    assert all(torch.equal(enc[k], v) for k, v in sd.text_encoders[0].state_dict().items())
    vae = trainer.space.vae.state_dict()
    assert all(torch.equal(vae[k], v) for k, v in sd.vae.state_dict().items())
    # init.json: each UNet tensor's file and key, each file's sha256
    files = record["files"]
    for f, facts in files.items():
        assert facts["sha256"] == hashlib.sha256(open(f, "rb").read()).hexdigest()
    entry = record["unet"]["down_blocks.0.resnets.0.conv1.weight"]["from"][0]
    if layout == "single-file":
        assert entry == {"file": single, "key": "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"}
    else:
        assert entry["file"].endswith("unet/diffusion_pytorch_model.safetensors")
    # step 0: the W-net (sketch in through both doors) computes its UNet's output
    x, t, sketch = _inputs(sd)
    captions = ["1girl, masterpiece", ""]
    with torch.no_grad():
        got = model(x, t, Prompt(captions=captions), sketch)
    want = _plain(sd, x, t, captions)
    assert (got - want).abs().max() <= 1e-6
    assert set(model.connections.which) == {"adapter", "skips"} and len(model.connections.skips) == 12


def test_recipe_picks_blocks_from_their_files_merges_and_leaves_some_fresh(models, tmp_path):
    (a, fa), (b, fb), (c, _) = models["a"], models["b"], models["c"]  # the base C is its diffusers folder
    cfg = sd_config(base=c.folder, blocks={"down_blocks.0": fa, "mid_block": b.folder,
                                           "up_blocks.1": {fa: 0.25, fb: 0.75}},
                    scratch=["up_blocks.0.resnets.1"])  # fmt: skip
    trainer, record = trainer_for(cfg, str(tmp_path / "run"))
    got = trainer.model.unet.state_dict()
    torch.manual_seed(cfg.train.seed)  # the same seeded fresh weights, without the recipe
    fresh = build_wnet(cfg, trainer.parts, len(VOCAB), str(tmp_path / "run"), 2).unet.state_dict()
    for k, v in got.items():
        if k.startswith("down_blocks.0."):
            want = a.unet.state_dict()[k]
        elif k.startswith("mid_block."):
            want = b.unet.state_dict()[k]
        elif k.startswith("up_blocks.1."):
            want = 0.25 * a.unet.state_dict()[k] + 0.75 * b.unet.state_dict()[k]
        elif k.startswith("up_blocks.0.resnets.1."):
            want = fresh[k]
        else:
            want = c.unet.state_dict()[k]
        assert torch.allclose(v, want, atol=1e-7), k
    assert not torch.equal(
        got["up_blocks.0.resnets.1.conv1.weight"], c.unet.state_dict()["up_blocks.0.resnets.1.conv1.weight"]
    )
    rec = record["unet"]
    assert rec["down_blocks.0.resnets.0.conv1.weight"]["prefix"] == "down_blocks.0"
    assert rec["down_blocks.0.resnets.0.conv1.weight"]["from"][0]["file"] == fa
    assert [p["weight"] for p in rec["up_blocks.1.resnets.0.conv1.weight"]["from"]] == [0.25, 0.75]
    assert rec["up_blocks.0.resnets.1.conv1.weight"] == {"scratch": True, "prefix": "up_blocks.0.resnets.1"}
    assert rec["conv_in.weight"]["from"][0]["file"].startswith(c.folder)
    assert len(rec) == len(got)  # every UNet tensor exactly once
    assert set(record["files"]) >= {fa, fb}


def test_strictness_names_the_key_and_the_file(models, tmp_path):
    sd, single = models["a"]
    # a block whose shapes differ
    other = make_sd(str(tmp_path / "wide"), "sd1", seed=5)
    wide = {k: torch.zeros(v.shape[0] * 2, *v.shape[1:]) if "down_blocks.1.resnets.0.conv1.weight" in k else v
            for k, v in other.unet.state_dict().items()}  # fmt: skip
    os.remove(tmp_path / "wide" / "unet" / "diffusion_pytorch_model.safetensors")
    save_file(wide, str(tmp_path / "wide" / "unet" / "diffusion_pytorch_model.safetensors"))
    cfg = sd_config(base=sd.folder, blocks={"down_blocks.1": str(tmp_path / "wide")})
    with pytest.raises(
        SourceError,
        match=r"down_blocks\.1\.resnets\.0\.conv1\.weight: .*wide/unet/diffusion_pytorch_model\.safetensors "
        r"has shape \(128, 32, 3, 3\), the W-net's UNet \(64, 32, 3, 3\)",
    ):
        trainer_for(cfg, str(tmp_path / "r1"))
    with pytest.raises(WnetConfigError, match="'down_blocks.9' names no UNet tensor"):
        trainer_for(sd_config(base=sd.folder, blocks={"down_blocks.9": single}), str(tmp_path / "r2"))
    with pytest.raises(WnetConfigError, match="merge weights must sum to 1"):
        sd_config(base=sd.folder, blocks={"mid_block": {single: 0.5, sd.folder: 0.4}})
    # a tensor missing from the file
    cut = {k: v for k, v in open_source(single).unet.items()}
    from safetensors import safe_open

    with safe_open(single, "pt") as fh:
        tensors = {
            k: fh.get_tensor(k) for k in fh.keys() if not k.endswith("middle_block.2.out_layers.3.bias")
        }
    save_file(tensors, str(tmp_path / "cut.safetensors"))
    with pytest.raises(SourceError, match=r"mid_block\.resnets\.1\.conv2\.bias is not in .*cut\.safetensors"):
        trainer_for(sd_config(base=str(tmp_path / "cut.safetensors"), blocks={}).replace(text={"encoder": "tags"}),
                    str(tmp_path / "r3"))  # fmt: skip
    assert cut  # the original file still maps every tensor
    # a key the UNet has no place for
    save_file({**tensors, "model.diffusion_model.input_blocks.1.0.extra.weight": torch.zeros(1)},
              str(tmp_path / "extra.safetensors"))  # fmt: skip
    with pytest.raises(
        SourceError,
        match=r"extra\.safetensors: UNet tensor model\.diffusion_model\.input_blocks\.1\.0"
        r"\.extra\.weight has no place",
    ):
        trainer_for(sd_config(base=str(tmp_path / "extra.safetensors")).replace(text={"encoder": "tags"}),
                    str(tmp_path / "r4"))  # fmt: skip


def test_pickles_are_read_with_weights_only_or_refused(models, tmp_path):
    sd, single = models["a"]
    from safetensors.torch import load_file

    plain = str(tmp_path / "model.ckpt")
    torch.save({"state_dict": load_file(single)}, plain)
    src = open_source(plain)
    assert src.family == "sd1" and set(src.unet) == set(sd.unet.state_dict())

    class Payload:  # a pickle that runs code when loaded
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = str(tmp_path / "evil.ckpt")
    torch.save({"state_dict": {"x": Payload()}}, evil)
    with pytest.raises(SourceError, match="refused: not readable with torch.load\\(weights_only=True\\)"):
        open_source(evil)
    assert not os.path.exists(tmp_path / "pwned")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="not a model file"):
        open_source(str(tmp_path / "notes.txt"))


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_and_sdxl_are_recognised_from_the_keys_and_load(tmp_path, family):
    sd = make_sd(str(tmp_path / family), family)
    single = write_ldm(sd, str(tmp_path / f"{family}.safetensors"))
    from wnet.sources import family_of

    assert family_of(single) == family == family_of(sd.folder)
    cfg = sd_config(family, base=single).replace(text={"tokenizer": sd.folder})
    trainer, _ = trainer_for(cfg, str(tmp_path / "run"))
    assert trainer.parts.text == ("sdxl" if family == "sdxl" else "clip")
    model = trainer.model.eval()
    x, t, sketch = _inputs(sd)
    captions = ["1girl, solo", ""]
    time_ids = torch.tensor([[768.0, 512.0, 0.0, 16.0, 32.0, 32.0], [32.0, 32.0, 0.0, 0.0, 32.0, 32.0]])
    with torch.no_grad():
        got = model(x, t, Prompt(captions=captions, time_ids=time_ids), sketch)
    assert (got - _plain(sd, x, t, captions, time_ids)).abs().max() <= 1e-6
    if family == "sdxl":  # the size ids reach the output
        with torch.no_grad():
            other = model(x, t, Prompt(captions=captions, time_ids=time_ids * 2), sketch)
        assert (other - got).abs().max() > 1e-4


def test_family_unets_match_the_published_configs():
    """sd1/sd2/sdxl without a base: diffusers builds them (meta device: no memory) with SD's parameter counts."""
    from diffusers import UNet2DConditionModel

    from wnet.unet import FAMILY_UNETS

    counts = {}
    for family, cfg in FAMILY_UNETS.items():
        with torch.device("meta"):
            unet = UNet2DConditionModel(**cfg)
        counts[family] = sum(p.numel() for p in unet.parameters())
    # SD 1.5: 859.5 M, SD 2.1: 865.9 M, SDXL base: 2567.5 M parameters
    assert round(counts["sd1"] / 1e6, 1) == 859.5
    assert round(counts["sd2"] / 1e6, 1) == 865.9
    assert round(counts["sdxl"] / 1e6, 1) == 2567.5


def test_ema_weights_of_a_single_file_and_a_trainable_text_encoder(models, tmp_path):
    sd, single = models["a"]
    from safetensors.torch import load_file

    # an LDM file with an EMA copy (model_ema.<flattened key>), as training checkpoints carry
    tensors = load_file(single)
    ema = {
        "model_ema." + "".join(k.split(".")[1:]): v * 2
        for k, v in tensors.items()
        if k.startswith("model.diffusion_model.")
    }
    save_file({**tensors, **ema}, str(tmp_path / "with-ema.safetensors"))
    cfg = sd_config(base=str(tmp_path / "with-ema.safetensors"), ema=True).replace(
        text={"tokenizer": sd.folder, "train_encoder": True}
    )
    trainer, record = trainer_for(cfg, str(tmp_path / "run"))
    got = trainer.model.unet.state_dict()
    assert all(torch.equal(got[k], 2 * v) for k, v in sd.unet.state_dict().items())
    assert (
        record["unet"]["conv_in.weight"]["from"][0]["key"] == "model_ema.diffusion_modelinput_blocks00weight"
    )
    # text.train_encoder: the text encoder trains and is saved with every checkpoint
    assert any(n.startswith("text.") for n, _ in trainer.params) and any(
        k.startswith("text.") for k in trainer.saved
    )
    frozen, _ = trainer_for(
        sd_config(base=single).replace(text={"tokenizer": sd.folder}), str(tmp_path / "run2")
    )
    assert not any(n.startswith("text.") for n, _ in frozen.params) and not any(
        k.startswith("text.") for k in frozen.saved
    )
    with pytest.raises(SourceError, match="init.ema reads a single file's EMA copy"):
        open_source(sd.folder, ema=True)
    with pytest.raises(SourceError, match="has no EMA weights"):
        open_source(single, ema=True)
