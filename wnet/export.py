"""``linepairs export-model RUN DIR``: a trained W-net as a folder that diffusers and torch load.

DIR holds, from the run's newest checkpoint (EMA weights by default):

- ``unet/``: the UNet, ``UNet2DConditionModel.save_pretrained`` (``config.json`` + safetensors);
- ``scheduler/``: the training noise schedule as a diffusers ``DDPMScheduler`` config;
- ``sketch_encoder/``: ``model.safetensors`` with the sketch encoder and its connection layers
  (``sketch_encoder.*``, ``connections.*``) and ``config.json`` (its widths and depth, the doors);
- ``tags/`` (learned-tag W-nets): the tag embedding and its vocabulary;
- ``vae/``, ``tokenizer[_2]/``, ``text_encoder[_2]/`` when the run has them, and then
  ``model_index.json``, so that ``StableDiffusionPipeline`` (or the XL one) loads DIR as the plain
  UNet pipeline (without the sketch);
- ``wnet.json`` (the W-net's config, parts, step and source) and ``README.md`` with a loading snippet.

``load_exported(DIR)`` rebuilds the whole W-net as a ``Painter`` from those files alone.
The folder is written under a temporary name and renamed, so DIR is whole or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import open_checkpoint, run_of
from .config import config_from_dict
from .diffusion import scheduler_config
from .painter import Painter
from .parts import Parts, build_wnet, load_weights
from .space import create_space
from .vocab import TagVocab

EXPORT_FORMAT = 1
SKETCH_PREFIXES = ("sketch_encoder.", "connections.")


class ExportError(ValueError):
    pass


README = """# W-net exported by linepairs

A sketch-to-illustration W-net (docs/wnet.md of linepairs): a diffusers `UNet2DConditionModel`
whose encoder path and skip connections also receive the feature maps of a separate sketch
encoder, through zero-initialised connection layers. Step {step} of run `{run}`, {which} weights.

| folder | what |
| --- | --- |
| `unet/` | the UNet: `UNet2DConditionModel.from_pretrained(DIR, subfolder="unet")` |
| `scheduler/` | the noise schedule ({prediction}{zsnr}) |
| `sketch_encoder/` | the sketch encoder and connection layers (`model.safetensors`, `config.json`) |
{extra}

The UNet alone is a plain diffusers UNet (with no sketch it computes what it learned without one).
The whole W-net needs linepairs' `wnet` package (`pip install linepairs`):

```python
import numpy as np
from diffusers import UNet2DConditionModel
from wnet.export import load_exported

unet = UNet2DConditionModel.from_pretrained("{dir}", subfolder="unet")   # the UNet alone
painter = load_exported("{dir}")                                           # UNet + sketch encoder{text_note}
sketch = np.full((1, {h}, {w}), 255, np.uint8)                             # line drawing: 0 ink on 255 paper
sketch[0, {h2}, :] = 0
image = painter.paint(sketch, [{{"general": ["1girl", "masterpiece"]}}], seed=0)   # N x H x W x 3 uint8
```

Line drawings enter inverted (ink 1.0 on 0.0); `painter.paint` does that. Sketch sides must divide
by {multiple}.
"""


def export_model(source: str, out: str, which: str = "ema") -> dict[str, Any]:
    """Write DIR from a run (its newest checkpoint) or a checkpoint folder; returns wnet.json's facts."""
    if os.path.exists(out) and os.listdir(out):
        raise ExportError(f"{out} exists and is not empty; choose a new folder")
    ckpt = open_checkpoint(source)
    run = run_of(ckpt.path)
    cfg = config_from_dict(ckpt.state["config"])
    parts = Parts.from_json(ckpt.state["parts"])
    vocab = TagVocab.from_json(ckpt.state["vocab"])
    weights = ckpt.weights(which)
    tmp = os.path.join(
        os.path.dirname(os.path.abspath(out)), f".tmp-{os.path.basename(os.path.abspath(out))}"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    space = create_space(parts.vae_path(run))
    model = build_wnet(cfg, parts, len(vocab), run, space.stride)
    load_weights(model, weights, ckpt.path)
    model.unet.save_pretrained(os.path.join(tmp, "unet"))
    os.makedirs(os.path.join(tmp, "scheduler"))
    with open(os.path.join(tmp, "scheduler", "scheduler_config.json"), "w", encoding="utf-8") as fh:
        json.dump({"_class_name": "DDPMScheduler", **scheduler_config(cfg.diffusion)}, fh, indent=1)
    state = model.state_dict()
    os.makedirs(os.path.join(tmp, "sketch_encoder"))
    save_file({k: v.contiguous() for k, v in state.items() if k.startswith(SKETCH_PREFIXES)},
              os.path.join(tmp, "sketch_encoder", "model.safetensors"))  # fmt: skip
    _write_json(os.path.join(tmp, "sketch_encoder", "config.json"),
                {"sketch_channels": list(cfg.model.sketch_channels), "sketch_blocks": cfg.model.sketch_blocks,
                 "groups": cfg.model.groups, "doors": list(cfg.model.doors), "stride": space.stride,
                 "lines": {"ink": 1.0, "paper": 0.0, "from_uint8": "1 - v / 255"}})  # fmt: skip
    exported = Parts(parts.unet, parts.text, "vae" if parts.vae else None, ".")
    if parts.text == "tags":
        os.makedirs(os.path.join(tmp, "tags"))
        save_file({k: v.contiguous() for k, v in state.items() if k.startswith("text.")},
                  os.path.join(tmp, "tags", "model.safetensors"))  # fmt: skip
        _write_json(os.path.join(tmp, "tags", "vocab.json"), vocab.to_json())
    else:
        names = [""] if parts.text == "clip" else ["", "_2"]
        for i, (tok, enc) in enumerate(zip(model.text.tokenizers, model.text.encoders, strict=True)):
            tok.save_pretrained(os.path.join(tmp, f"tokenizer{names[i]}"))
            enc.save_pretrained(os.path.join(tmp, f"text_encoder{names[i]}"))
    if parts.vae:
        space.vae.save_pretrained(os.path.join(tmp, "vae"))
    if parts.vae and parts.text != "tags":
        _write_json(os.path.join(tmp, "model_index.json"), _model_index(parts))
    facts = {"format": EXPORT_FORMAT, "step": ckpt.step, "weights": which, "source": ckpt.path,
             "config": cfg.to_dict(), "parts": exported.to_json(), "vocab": vocab.to_json()}  # fmt: skip
    _write_json(os.path.join(tmp, "wnet.json"), facts)
    h, w = 8 * model.size_multiple * space.stride, 8 * model.size_multiple * space.stride
    extra = {"tags": "| `tags/` | the learned tag embedding and its vocabulary |",
             "clip": "| `vae/`, `tokenizer/`, `text_encoder/` | the Stable Diffusion parts (`StableDiffusionPipeline.from_pretrained(DIR)` loads the plain UNet pipeline) |",
             "sdxl": "| `vae/`, `tokenizer[_2]/`, `text_encoder[_2]/` | the SDXL parts (`StableDiffusionXLPipeline.from_pretrained(DIR)` loads the plain UNet pipeline) |"}[parts.text]  # fmt: skip
    if parts.vae and parts.text == "tags":
        extra += "\n| `vae/` | the VAE of its latent space |"
    with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(README.format(
            step=ckpt.step, run=run or ckpt.path, which=which, prediction=cfg.diffusion.prediction,
            zsnr=", zero terminal SNR" if cfg.diffusion.zero_terminal_snr else "", extra=extra,
            dir=os.path.abspath(out), h=h, w=w, h2=h // 2, multiple=model.size_multiple * space.stride,
            text_note=" + tag embedding" if parts.text == "tags" else " + text encoder",
        ))  # fmt: skip
    if os.path.isdir(out):
        os.rmdir(out)
    os.replace(tmp, out)
    return facts


def _model_index(parts: Parts) -> dict[str, Any]:
    import diffusers

    index = {"_class_name": "StableDiffusionXLPipeline" if parts.text == "sdxl" else "StableDiffusionPipeline",
             "_diffusers_version": diffusers.__version__, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDPMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"]}  # fmt: skip
    if parts.text == "sdxl":
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=False)  # fmt: skip
    else:
        index.update(
            safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False
        )
    return index


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)


def load_exported(folder: str, device: str = "cpu") -> Painter:
    """The whole W-net of an exported folder, ready to paint (``Painter.paint``)."""
    with open(os.path.join(folder, "wnet.json"), encoding="utf-8") as fh:
        facts = json.load(fh)
    cfg = config_from_dict(facts["config"])
    parts = Parts.from_json(facts["parts"])
    vocab = TagVocab.from_json(facts["vocab"])
    space = create_space(parts.vae_path(folder), device)
    model = build_wnet(cfg, parts, len(vocab), folder, space.stride)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    weights = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    weights.update(load_file(os.path.join(folder, "sketch_encoder", "model.safetensors")))
    if parts.text == "tags":
        weights.update(load_file(os.path.join(folder, "tags", "model.safetensors")))
    load_weights(model, weights, folder)
    return Painter(
        cfg, model.to(device).eval(), vocab, space, torch.device(device), int(facts["step"]), parts
    )


__all__ = ["ExportError", "export_model", "load_exported"]
