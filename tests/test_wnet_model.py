"""W-net pieces without a build: zero-init injections, schedules, samplers, vocabulary, config, checkpoints, metrics."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from wnet.checkpoint import CheckpointError, list_checkpoints, open_checkpoint, save_checkpoint
from wnet.config import PRESETS, DiffusionConfig, WnetConfigError, check_same, config_from_dict, load_config
from wnet.diffusion import Schedule, guided, sample, timesteps_for
from wnet.metrics import edge_scores, pair_scores
from wnet.model import WNet
from wnet.painter import null_tags
from wnet.vocab import NULL, PAD, TagVocab, parse_tags

TINY = PRESETS["tiny"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(n=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = null_tags(n, TINY.model.max_tags)
    ids[:, 1] = 7
    return (
        torch.randn(n, 3, size, size, generator=g),
        torch.tensor([3, 700])[:n],
        ids,
        torch.rand(n, 1, size, size, generator=g),
    )


def test_at_step_zero_the_wnet_is_the_plain_unet_and_the_sketch_matters_once_trained():
    torch.manual_seed(0)
    model = WNet(TINY.model, 3, vocab_size=20)
    x, t, ids, sketch = _inputs()
    with torch.no_grad():
        plain = model.unet(x, t, ids)
        assert torch.equal(model(x, t, ids, sketch), plain)
        assert torch.equal(model(x, t, ids, torch.ones_like(sketch)), plain)
    # One optimiser step moves the zero convolutions; then the sketch changes the output and scale 0 turns it off.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, t, ids, sketch).square().mean().backward()
    assert all(c.weight.grad.abs().sum() > 0 for c in model.unet.inject_skip)
    opt.step()
    with torch.no_grad():
        plain = model.unet(x, t, ids)
        assert not torch.allclose(model(x, t, ids, sketch), plain)
        assert torch.equal(model(x, t, ids, sketch, torch.zeros(2)), plain)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = WNet(TINY.model, 3, vocab_size=20)
    x, t, ids, sketch = _inputs()
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(on)
        model(x, t, ids, sketch).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_tags_reach_the_output():
    torch.manual_seed(0)
    model = WNet(TINY.model, 3, vocab_size=20)
    x, t, ids, sketch = _inputs()
    other = ids.clone()
    other[:, 1] = 9
    with torch.no_grad():
        assert (model(x, t, ids, sketch) - model(x, t, other, sketch)).abs().max() > 1e-4


@pytest.mark.parametrize("schedule", ["scaled_linear", "cosine"])
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_schedules_targets_and_recovery(schedule, prediction):
    cfg = DiffusionConfig(
        schedule=schedule, prediction=prediction, zero_terminal_snr=False, min_snr_gamma=5.0
    )
    s = Schedule.create(cfg)
    ab = s.alpha_bar
    assert len(ab) == 1000 and torch.all(ab[1:] < ab[:-1]) and 0 < ab[-1] < 0.01 and ab[0] > 0.99
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    x_t = s.add_noise(x0, noise, t)
    target = s.target(x0, noise, t)
    for i in range(4):
        rx0, reps = s.split(target[i : i + 1], x_t[i : i + 1], ab[t[i]].float())
        assert torch.allclose(reps, noise[i : i + 1], atol=2e-3) and torch.allclose(
            rx0, x0[i : i + 1], atol=0.2 if prediction == "epsilon" else 2e-3
        )
    w = s.loss_weight(t)
    snr = s.snr(t)
    expected = torch.clamp(snr, max=5.0) / (snr + 1 if prediction == "v" else snr)
    assert torch.allclose(w, expected)


def test_zero_terminal_snr():
    base = Schedule.create(DiffusionConfig(schedule="scaled_linear", prediction="v", zero_terminal_snr=False))
    z = Schedule.create(
        DiffusionConfig(schedule="scaled_linear", prediction="v", zero_terminal_snr=True, min_snr_gamma=5.0)
    )
    assert float(z.alpha_bar[-1]) == pytest.approx(0.0, abs=1e-12)
    assert float(z.alpha_bar[0]) == pytest.approx(float(base.alpha_bar[0]), rel=1e-9)
    assert float(z.loss_weight(torch.tensor([999]))[0]) == 0.0  # v-prediction at SNR 0: weight 0, not NaN
    unweighted = Schedule.create(DiffusionConfig(prediction="v", zero_terminal_snr=True, min_snr_gamma=0.0))
    assert torch.equal(unweighted.loss_weight(torch.tensor([0, 999])), torch.ones(2))  # tiny's: no weighting
    with pytest.raises(WnetConfigError, match="zero_terminal_snr"):
        config_from_dict({"diffusion": {"zero_terminal_snr": True, "prediction": "epsilon"}})


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
@pytest.mark.parametrize("zsnr", [False, True])
def test_samplers_are_deterministic_finite_and_use_guidance(sampler, zsnr):
    torch.manual_seed(0)
    cfg = TINY.replace(
        diffusion={"prediction": "v", "zero_terminal_snr": zsnr}, sample={"sampler": sampler, "steps": 4}
    )
    model = WNet(cfg.model, 3, vocab_size=20).eval()
    for conv in model.unet.inject_skip:  # a sketch that matters
        torch.nn.init.normal_(conv.weight, std=0.1)
    sch = Schedule.create(cfg.diffusion)
    _, _, ids, sketch = _inputs()

    def den(x, t, tags, scale):
        return model(x, t, tags, sketch.repeat(x.shape[0] // 2, 1, 1, 1), scale)

    def run(c):
        return sample(
            den, sch, (2, 3, 16, 16), ids, null_tags(2, ids.shape[1]), c, torch.Generator().manual_seed(1)
        )

    a, b = run(cfg.sample), run(cfg.sample)
    assert a.shape == (2, 3, 16, 16) and torch.isfinite(a).all() and torch.equal(a, b)
    no_guidance = run(cfg.sample.__class__(sampler=sampler, steps=4, guidance_tags=1.0, guidance_sketch=1.0))
    assert not torch.allclose(a, no_guidance)
    assert timesteps_for(sch, 4)[0] == 999 and len(timesteps_for(sch, 4)) == 4


def test_guidance_with_unit_scales_is_one_conditional_pass():
    calls = []

    def den(x, t, tags, scale):
        calls.append(x.shape[0])
        return x * 2 + scale.view(-1, 1, 1, 1) + tags[:, 1].float().view(-1, 1, 1, 1)

    x, t, ids = torch.randn(2, 3, 4, 4), torch.tensor([5, 5]), null_tags(2, 4)
    ids[:, 1] = 3
    out = guided(den, x, t, ids, null_tags(2, 4), 0.5, 1.0, 1.0)
    assert calls == [2] and torch.allclose(out, x * 2 + 0.5 + 3)
    out = guided(den, x, t, ids, null_tags(2, 4), 0.5, 3.0, 2.0)
    # u = 2x, c_sketch = 2x + 0.5, c_both = 2x + 3.5: u + 2 * 0.5 + 3 * 3
    assert calls == [2, 6] and torch.allclose(out, x * 2 + 1.0 + 9.0)


def test_vocabulary():
    tags = [
        {"general": ["1girl", "solo"], "character": ["miku"]},
        {"general": ["1girl"], "artist": ["a"]},
        {},
    ]
    vocab = TagVocab.build(tags, per_category=1)
    assert (
        vocab.tokens[:2] == ("<pad>", "<null>")
        and "general:1girl" in vocab.tokens
        and "general:solo" not in vocab.tokens
    )
    ids = vocab.encode({"general": ["1girl", "solo", "never_seen"], "character": ["miku"]}, max_tags=6)
    assert ids[0] == NULL and list(ids[-1:]) == [PAD]
    words = vocab.decode(ids)
    assert words == ["character:miku", "general:1girl", "<unk:general>", "<unk:general>"]
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
    with pytest.raises(WnetConfigError, match="not a preset"):
        load_config(str(tmp_path / "nope.toml"))
    path = tmp_path / "c.toml"
    path.write_text('preset = "tiny"\n[train]\nsteps = 7\n')
    cfg = load_config(str(path))
    assert cfg.train.steps == 7 and cfg.model == TINY.model and cfg.name == "c"
    assert {"tiny", "small", "sd"} <= set(PRESETS)
    with pytest.raises(
        WnetConfigError, match=r"model.channels: \[16, 32, 64\] \(checkpoint\) vs \[64, 128, 256, 256\]"
    ):
        check_same(TINY.to_dict(), PRESETS["small"])


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    run = str(tmp_path / "run")
    model = WNet(TINY.model, 3, vocab_size=10)
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
    diffusers = pytest.importorskip("diffusers")
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
    model = WNet(TINY.model, space.channels, vocab_size=10, sketch_stride=space.stride)
    _, t, ids, sketch = _inputs(size=16)
    assert model(z, t, ids, sketch).shape == z.shape


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
    import numpy as np

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
    fitted = fit_batch(batch, TINY)
    mult = 2 ** (len(TINY.model.channels) - 1)
    w, h = train_size((512, 768), TINY.train.max_side, mult)
    assert fitted.images.shape == (2, h, w, 3) and fitted.lines.shape == (2, h, w)
    assert fitted.lines.min() == 0 and fitted.keys == batch.keys


def test_gap_interval_is_a_seeded_bootstrap_of_the_mean():
    import numpy as np

    from wnet.evaluate import gap_interval

    gaps = np.random.default_rng(3).normal(0.1, 0.05, 40)
    lo, hi = gap_interval(gaps)
    assert lo < gaps.mean() < hi and (lo, hi) == gap_interval(gaps)
    se = gaps.std(ddof=1) / np.sqrt(len(gaps))
    assert 2.5 * se < hi - lo < 5.5 * se  # about 2 x 1.96 standard errors
    assert gap_interval(np.full(10, 0.07)) == pytest.approx((0.07, 0.07))
