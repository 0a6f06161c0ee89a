"""W-net pieces without a build: the doors and zero-initialised connections on diffusers' UNet,
diffusers' schedulers under our guidance, conditioning, vocabulary, config, checkpoints, metrics."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from wnet.checkpoint import CheckpointError, list_checkpoints, open_checkpoint, save_checkpoint
from wnet.config import (
    PRESETS,
    DiffusionConfig,
    SampleConfig,
    WnetConfigError,
    check_same,
    config_from_dict,
    load_config,
)
from wnet.diffusion import Schedule, guided, sample, timesteps_for
from wnet.metrics import edge_scores, pair_scores
from wnet.model import Cond, WNet
from wnet.text import Prompt, TagEmbedding, captions, drop_tags, null_ids, sdxl_time_ids
from wnet.unet import FAMILY_UNETS, custom_unet_config, door_shapes
from wnet.vocab import NULL, PAD, TagVocab, parse_tags

TINY = PRESETS["tiny"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_wnet(model=TINY.model, vocab=20, seed=0) -> WNet:
    torch.manual_seed(seed)
    return WNet(model, custom_unet_config(model, 3), TagEmbedding(vocab, model.tag_dim, pooled=True))


def _inputs(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = null_ids(n, TINY.model.max_tags)
    ids[:, 1] = 7
    return (torch.randn(n, 3, size, size, generator=g), torch.tensor([3, 700])[:n], Prompt(ids=ids),
            torch.rand(n, 1, size, size, generator=g))  # fmt: skip


def _plain(model: WNet, x, t, prompt) -> torch.Tensor:
    """diffusers' UNet alone, no door opened."""
    cond = model.encode(prompt)
    return model.unet(
        x, t, cond.hidden, class_labels=cond.class_labels, encoder_attention_mask=cond.mask
    ).sample


def test_at_step_zero_the_wnet_is_its_unet_and_the_sketch_matters_once_trained():
    model = tiny_wnet()
    x, t, prompt, sketch = _inputs()
    with torch.no_grad():
        plain = _plain(model, x, t, prompt)
        assert (model(x, t, prompt, sketch) - plain).abs().max() <= 1e-6
        assert (model(x, t, prompt, torch.ones_like(sketch)) - plain).abs().max() <= 1e-6
    # One optimiser step moves the zero convolutions of both doors; then the sketch changes the output
    # and scale 0 turns it off.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, t, prompt, sketch).square().mean().backward()
    conns = model.connections
    assert all(c.weight.grad.abs().sum() > 0 for c in [*conns.adapter, *conns.skips, conns.mid])
    opt.step()
    with torch.no_grad():
        plain = _plain(model, x, t, prompt)
        assert not torch.allclose(model(x, t, prompt, sketch), plain)
        assert (model(x, t, prompt, sketch, torch.zeros(2)) - plain).abs().max() <= 1e-6


@pytest.mark.parametrize("doors", [("adapter",), ("skips",)])
def test_each_door_alone_reaches_the_output(doors):
    model = tiny_wnet(TINY.model.__class__(**{**TINY.model.__dict__, "doors": doors}))
    x, t, prompt, sketch = _inputs()
    with torch.no_grad():
        for p in model.connections.parameters():
            p.normal_(0, 0.1)
        diff = (model(x, t, prompt, sketch) - _plain(model, x, t, prompt)).abs().max()
    assert diff > 1e-3
    assert (len(model.connections.adapter) > 0) == ("adapter" in doors)
    assert (len(model.connections.skips) > 0) == ("skips" in doors)


def test_doors_follow_diffusers_block_layout():
    sd1 = door_shapes(FAMILY_UNETS["sd1"])
    # SD 1.5: conv_in, 2 layers x 4 levels, 3 downsamplers = 12 skips; an adapter residual per level
    assert len(sd1.skips) == 12 and [(s.channels, s.level) for s in sd1.adapter] == [
        (320, 0),
        (640, 1),
        (1280, 2),
        (1280, 3),
    ]
    assert (sd1.mid.channels, sd1.mid.level) == (1280, 3)
    xl = door_shapes(FAMILY_UNETS["sdxl"])
    # SDXL's first block has no cross-attention: diffusers adds its residual after the downsampler
    assert [(s.channels, s.level) for s in xl.adapter] == [(320, 1), (640, 1), (1280, 2)] and len(
        xl.skips
    ) == 9


def test_the_sketch_encoder_may_be_larger_than_the_unet():
    big = TINY.model.__class__(
        **{**TINY.model.__dict__, "sketch_channels": (32, 64, 128), "sketch_blocks": 3}
    )
    model = tiny_wnet(big)
    sketch_params = sum(p.numel() for m in (model.sketch_encoder, model.connections) for p in m.parameters())
    assert sketch_params > sum(p.numel() for p in model.unet.parameters())
    x, t, prompt, sketch = _inputs()
    with torch.no_grad():
        assert (model(x, t, prompt, sketch) - _plain(model, x, t, prompt)).abs().max() <= 1e-6
    with pytest.raises(WnetConfigError, match="sketch_channels has 2 widths; the UNet has 3 levels"):
        WNet(TINY.model.__class__(**{**TINY.model.__dict__, "sketch_channels": (16, 32)}),
             custom_unet_config(TINY.model, 3), TagEmbedding(20, 64, True))  # fmt: skip


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_wnet()
    with torch.no_grad():
        for p in model.connections.parameters():
            p.normal_(0, 0.1)
    x, t, prompt, sketch = _inputs()
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(on)
        model(x, t, prompt, sketch).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert model.unet.is_gradient_checkpointing
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_autocast_step_on_cpu_is_close_to_fp32():
    from types import SimpleNamespace

    from wnet.trainer import Trainer

    vocab = TagVocab.build([{"general": ["warm"]}], 10)
    rng = np.random.default_rng(0)
    batch = SimpleNamespace(keys=list("abcd"), meta=[{"tags": {"general": ["warm"]}}] * 4,
                            images=rng.integers(0, 256, (4, 16, 16, 3), np.uint8),
                            lines=rng.integers(0, 256, (4, 16, 16), np.uint8))  # fmt: skip
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(TINY.replace(train={"precision": precision}), vocab)
        losses[precision] = trainer.train_step(batch)["loss"]
    assert np.isfinite(losses["bf16"]) and abs(losses["bf16"] - losses["fp32"]) < 0.02 * losses["fp32"]


def test_tags_reach_the_output():
    model = tiny_wnet()
    x, t, prompt, sketch = _inputs()
    other = prompt.ids.clone()
    other[:, 1] = 9
    with torch.no_grad():
        assert (model(x, t, prompt, sketch) - model(x, t, Prompt(ids=other), sketch)).abs().max() > 1e-4


@pytest.mark.parametrize("schedule", ["scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_schedules_targets_and_weights(schedule, prediction):
    cfg = DiffusionConfig(
        schedule=schedule, prediction=prediction, zero_terminal_snr=False, min_snr_gamma=5.0
    )
    s = Schedule.create(cfg)
    ab = s.alpha_bar.double()
    assert len(ab) == 1000 and torch.all(ab[1:] < ab[:-1]) and 0 < ab[-1] < 0.01 and ab[0] > 0.99
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    a = ab[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(s.add_noise(x0, noise, t), a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-5)
    want = noise if prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
    assert torch.allclose(s.target(x0, noise, t), want, atol=1e-5)
    snr = ab[t] / (1 - ab[t])
    expected = torch.clamp(snr, max=5.0) / (snr + 1 if prediction == "v" else snr)
    assert torch.allclose(s.loss_weight(t), expected.float(), rtol=1e-4)


def test_zero_terminal_snr():
    base = Schedule.create(DiffusionConfig(prediction="v", zero_terminal_snr=False))
    z = Schedule.create(DiffusionConfig(prediction="v", zero_terminal_snr=True, min_snr_gamma=5.0))
    assert float(z.alpha_bar[-1]) == pytest.approx(0.0, abs=1e-9)
    assert float(z.alpha_bar[0]) == pytest.approx(float(base.alpha_bar[0]), rel=1e-5)
    assert float(z.loss_weight(torch.tensor([999]))[0]) == 0.0  # v-prediction at SNR 0: weight 0, not NaN
    unweighted = Schedule.create(DiffusionConfig(prediction="v", zero_terminal_snr=True, min_snr_gamma=0.0))
    assert torch.equal(unweighted.loss_weight(torch.tensor([0, 999])), torch.ones(2))  # tiny's: no weighting
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.allclose(z.add_noise(x0, noise, torch.tensor([999, 999])), noise)  # pure noise at the end
    with pytest.raises(WnetConfigError, match="zero_terminal_snr"):
        config_from_dict({"diffusion": {"zero_terminal_snr": True, "prediction": "epsilon"}})


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
@pytest.mark.parametrize("zsnr", [False, True])
def test_samplers_are_deterministic_finite_and_use_guidance(sampler, zsnr):
    cfg = TINY.replace(
        diffusion={"prediction": "v", "zero_terminal_snr": zsnr}, sample={"sampler": sampler, "steps": 4}
    )
    model = tiny_wnet().eval()
    for conv in model.connections.skips:  # a sketch that matters
        torch.nn.init.normal_(conv.weight, std=0.1)
    x, _, prompt, sketch = _inputs()
    with torch.no_grad():
        cond, null = model.encode(prompt), model.encode(Prompt(ids=null_ids(2, TINY.model.max_tags)))
    feats = model.sketch_encoder(sketch)

    def den(x, t, c, scale):
        reps = x.shape[0] // 2
        return model.denoise(x, t, c, [f.repeat(reps, 1, 1, 1) for f in feats], scale)

    def run(c):
        return sample(den, cfg.diffusion, (2, 3, 16, 16), cond, null, c, torch.Generator().manual_seed(1))

    a, b = run(cfg.sample), run(cfg.sample)
    assert a.shape == (2, 3, 16, 16) and torch.isfinite(a).all() and torch.equal(a, b)
    no_guidance = run(SampleConfig(sampler=sampler, steps=4, guidance_tags=1.0, guidance_sketch=1.0))
    assert not torch.allclose(a, no_guidance)
    steps = timesteps_for(cfg.diffusion, cfg.sample)
    assert steps[0] == 999 and len(steps) == 4  # trailing spacing: the first step is pure noise


def test_guidance_with_unit_scales_is_one_conditional_pass():
    calls = []

    def den(x, t, cond, scale):
        calls.append(x.shape[0])
        return x * 2 + scale.view(-1, 1, 1, 1) + cond.hidden[:, :1, :1].view(-1, 1, 1, 1)

    x, t = torch.randn(2, 3, 4, 4), torch.tensor([5, 5])
    cond, null = Cond(torch.full((2, 1, 1), 3.0)), Cond(torch.zeros(2, 1, 1))
    out = guided(den, x, t, cond, null, 0.5, 1.0, 1.0)
    assert calls == [2] and torch.allclose(out, x * 2 + 0.5 + 3)
    out = guided(den, x, t, cond, null, 0.5, 3.0, 2.0)
    # u = 2x, c_sketch = 2x + 0.5, c_both = 2x + 3.5: u + 2 * 0.5 + 3 * 3
    assert calls == [2, 6] and torch.allclose(out, x * 2 + 1.0 + 9.0)


def test_captions_follow_the_caption_rule_and_sdxl_ids_the_real_crop():
    tags = {"general": ["1girl", "long_hair", "^_^"], "character": ["hatsune_miku"], "meta": ["highres"],
            "copyright": ["vocaloid"], "artist": []}  # fmt: skip
    assert captions([tags], TINY.text) == ["hatsune miku, vocaloid, 1girl, long hair, ^_^"]
    assert captions([tags], TINY.text.__class__(underscores=True)) == [
        "hatsune_miku, vocaloid, 1girl, long_hair, ^_^"
    ]
    gen = torch.Generator().manual_seed(0)
    dropped = drop_tags([tags, tags], 0.5, [False, True], gen)
    assert dropped[1]["general"] == [] and set(dropped[0]["general"]) <= set(tags["general"])
    # 1000x1500 original, cropped to its middle 1000x1000, trained at 64x64
    meta = {"original_size": [1000, 1500], "crop_box": [0, 250, 1000, 1250]}
    assert sdxl_time_ids(meta, (64, 64), False) == [1500.0, 1000.0, 16, 0, 64.0, 64.0]
    meta = {"original_size": [1500, 1000], "crop_box": [100, 0, 1100, 1000]}
    assert sdxl_time_ids(meta, (64, 64), False)[2:4] == [0, 6]
    assert sdxl_time_ids(meta, (64, 64), True)[2:4] == [0, 26]  # mirrored: 400 px from the right edge


def test_vocabulary():
    tags = [
        {"general": ["1girl", "solo"], "character": ["miku"]},
        {"general": ["1girl"], "artist": ["a"]},
        {},
    ]
    vocab = TagVocab.build(tags, per_category=1)
    assert vocab.tokens[:2] == ("<pad>", "<null>") and "general:1girl" in vocab.tokens
    assert "general:solo" not in vocab.tokens
    ids = vocab.encode({"general": ["1girl", "solo", "never_seen"], "character": ["miku"]}, max_tags=6)
    assert ids[0] == NULL and list(ids[-1:]) == [PAD]
    assert vocab.decode(ids) == ["character:miku", "general:1girl", "<unk:general>", "<unk:general>"]
    assert list(vocab.encode({}, 3)) == [NULL, PAD, PAD]
    assert len(vocab.encode({"general": ["1girl"] * 50}, 4)) == 4
    assert TagVocab.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab
    assert parse_tags("1girl, character:hatsune_miku, :d, re:zero") == {
        "character": ["hatsune_miku"], "copyright": [], "artist": [], "general": ["1girl", ":d", "re:zero"], "meta": []}  # fmt: skip


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(WnetConfigError, match="model.sketch_channels"):
        config_from_dict({"model": {"channels": [32, 64]}})  # 3 sketch widths
    with pytest.raises(WnetConfigError, match=r"unknown key\(s\) in \[train\]: stepz"):
        config_from_dict({"train": {"stepz": 3}})
    with pytest.raises(WnetConfigError, match="train.lr must be float"):
        config_from_dict({"train": {"lr": "fast"}})
    with pytest.raises(WnetConfigError, match="train.strategy must be 'ddp' or 'fsdp'"):
        config_from_dict({"train": {"strategy": "zero"}})
    with pytest.raises(WnetConfigError, match="text.caption_order"):
        config_from_dict({"text": {"caption_order": ["general", "colour"]}})
    with pytest.raises(WnetConfigError, match="is both in init.blocks and init.scratch"):
        config_from_dict({"init": {"blocks": {"mid_block": "a.safetensors"}, "scratch": ["mid_block"]}})
    with pytest.raises(WnetConfigError, match="not a preset"):
        load_config(str(tmp_path / "nope.toml"))
    path = tmp_path / "c.toml"
    path.write_text('preset = "tiny"\n[train]\nsteps = 7\n[init]\nbase = "models/any.safetensors"\n'
                    '[init.blocks]\n"mid_block" = { "b.safetensors" = 0.5, "/abs/c" = 0.5 }\n')  # fmt: skip
    cfg = load_config(str(path))
    assert cfg.train.steps == 7 and cfg.model == TINY.model and cfg.name == "c"
    # relative model paths are read from the TOML file's folder
    assert cfg.init.base == str(tmp_path / "models" / "any.safetensors")
    assert cfg.init.blocks == {"mid_block": {str(tmp_path / "b.safetensors"): 0.5, "/abs/c": 0.5}}
    assert {"tiny", "small", "sd", "sd2", "sdxl"} <= set(PRESETS)
    with pytest.raises(
        WnetConfigError, match=r"model.channels: \[16, 32, 64\] \(checkpoint\) vs \[64, 128, 256, 256\]"
    ):
        check_same(TINY.to_dict(), PRESETS["small"])


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    run = str(tmp_path / "run")
    model = tiny_wnet(vocab=10)
    sd = model.state_dict()
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2, 3):
        save_checkpoint(
            run, step, model=sd, ema=sd, optimizer=opt.state_dict(), state={"config": TINY.to_dict()}, keep=2
        )
    assert [s for s, _ in list_checkpoints(run)] == [2, 3]
    os.makedirs(os.path.join(run, "checkpoints", ".tmp-step-00000004-1"))  # a writer killed mid-way: ignored
    ckpt = open_checkpoint(run)
    assert ckpt.step == 3 and ckpt.state["lines"]["ink"] == 1.0
    loaded = ckpt.weights("model")
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert "state" in ckpt.optimizer()
    with pytest.raises(CheckpointError, match="no state.json"):
        open_checkpoint(str(tmp_path))
    # a checkpoint of the hand-written UNet (format 1) is named, not misread
    state = os.path.join(run, "checkpoints", "step-00000003", "state.json")
    data = json.load(open(state))
    json.dump({**data, "format": 1}, open(state, "w"))
    with pytest.raises(CheckpointError, match="checkpoint format 1, this version reads 2"):
        open_checkpoint(os.path.dirname(state))


def test_edge_scores():
    a = np.full((40, 40), 255, np.uint8)
    a[20, 5:35] = 0
    near, far = np.roll(a, 1, 0), np.roll(a, 12, 0)
    assert pair_scores(a, a) == (1.0, 0.0)
    f_near, c_near = pair_scores(near, a)
    f_far, c_far = pair_scores(far, a)
    assert f_near == 1.0 and c_near == pytest.approx(1.0)
    assert f_far == 0.0 and c_far == pytest.approx(12.0)
    assert pair_scores(np.full_like(a, 255), a)[0] == 0.0
    assert edge_scores(np.stack([a, far]), np.stack([a, a]))["f1"] == 0.5


def test_latent_space_with_a_real_autoencoderkl(tmp_path):
    import diffusers

    from wnet.space import LatentSpace

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                                  layers_per_block=1)  # fmt: skip
    vae.save_pretrained(str(tmp_path / "vae"))
    space = LatentSpace(str(tmp_path / "vae"))
    assert space.channels == 4 and space.stride == 2
    z = space.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert z.shape == (2, 4, 8, 8) and space.decode(z).shape == (2, 3, 16, 16)
    m = TINY.model
    model = WNet(
        m,
        custom_unet_config(m, space.channels),
        TagEmbedding(10, m.tag_dim, True),
        sketch_stride=space.stride,
    )
    _, t, prompt, sketch = _inputs(size=16)
    assert model(z, t, prompt, sketch).shape == z.shape


def test_docs_list_every_config_key_with_its_tiny_default():
    text = open(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "wnet.md")
    ).read()
    for section, values in TINY.to_dict().items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            assert f"| `{section}.{key}` | `{json.dumps(value)}` |" in text, (
                f"docs/wnet.md lacks {section}.{key} = {value}"
            )


def test_batches_larger_than_max_side_are_resized_to_the_training_size():
    from sharding.loader import Batch
    from wnet.data import fit_batch, train_size

    assert train_size((512, 768), 64, 4) == (44, 64)
    assert train_size((48, 64), 64, 4) == (48, 64)  # small enough: untouched
    assert train_size((512, 768), 0, 4) == (512, 768)  # 0: bucket size
    images = np.zeros((2, 768, 512, 3), np.uint8)
    lines = np.full((2, 768, 512), 255, np.uint8)
    lines[:, :, 200:260] = 0  # a thick vertical stroke survives the area resize
    batch = Batch(
        keys=["a", "b"], bucket=(512, 768), images=images, lines=lines, extractors=["x", "x"], meta=[{}, {}]
    )
    fitted = fit_batch(batch, TINY, 4)
    w, h = train_size((512, 768), TINY.train.max_side, 4)
    assert fitted.images.shape == (2, h, w, 3) and fitted.lines.shape == (2, h, w)
    assert fitted.lines.min() == 0 and fitted.keys == batch.keys


def test_gap_interval_is_a_seeded_bootstrap_of_the_mean():
    from wnet.evaluate import gap_interval

    gaps = np.random.default_rng(3).normal(0.1, 0.05, 40)
    lo, hi = gap_interval(gaps)
    assert lo < gaps.mean() < hi and (lo, hi) == gap_interval(gaps)
    se = gaps.std(ddof=1) / np.sqrt(len(gaps))
    assert 2.5 * se < hi - lo < 5.5 * se  # about 2 x 1.96 standard errors
    assert gap_interval(np.full(10, 0.07)) == pytest.approx((0.07, 0.07))
