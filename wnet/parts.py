"""From a config (and its init base) to the W-net's parts, saved once per run, and the W-net built from them.

``Parts`` is what a config resolves to and every checkpoint records: the diffusers UNet config (the
init base's own, or ``model.unet``'s), the conditioning (``tags``: a learned tag embedding; ``clip``:
the checkpoint's tokenizer and text encoder; ``sdxl``: its two, pooled, with size ids) and the VAE
folder (None: pixel space). ``make_parts`` writes what the base brought into ``RUN/components/``
(``vae/``, ``tokenizer[_2]/``, ``text_encoder[_2]/``, diffusers' and transformers' own folder
formats), so a run never needs the original file again; ``build_wnet`` makes the W-net from them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .config import WnetConfig, WnetConfigError
from .model import WNet
from .sources import ModelSource, SourceError, open_source
from .text import TagEmbedding, TextEncoders
from .unet import unet_config

COMPONENTS = "components"  # inside RUN


@dataclass(frozen=True)
class Parts:
    unet: dict[str, Any]  # diffusers UNet2DConditionModel config
    text: str  # "tags", "clip" or "sdxl"
    vae: str | None  # an AutoencoderKL folder: absolute, or relative to the root (a run: components/vae)
    components: str = COMPONENTS  # the folder of tokenizer[_2]/ and text_encoder[_2]/, relative to the root

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Parts:
        return cls(dict(data["unet"]), str(data["text"]), data.get("vae"), data.get("components", COMPONENTS))

    def multiple(self, run: str | None) -> int:
        """What every trained side must divide by: 2^(levels-1) x the space's stride."""
        from .space import space_stride

        return 2 ** (len(self.unet["block_out_channels"]) - 1) * space_stride(self.vae_path(run))

    def vae_path(self, root: str | None) -> str | None:
        """The VAE folder; ``root`` is the run (or the exported folder) relative paths start from."""
        if self.vae is None or os.path.isabs(self.vae):
            return self.vae
        if root is None:
            raise WnetConfigError(f"the VAE is inside a run ({self.vae}); open the checkpoint inside its run")
        return os.path.join(root, self.vae)


def base_of(cfg: WnetConfig) -> ModelSource | None:
    return open_source(os.path.abspath(cfg.init.base), cfg.init.ema) if cfg.init.base else None


def _text_mode(cfg: WnetConfig, unet: dict[str, Any], base: ModelSource | None) -> str:
    wants = cfg.text.encoder
    has = base is not None and base.has_text
    if wants == "checkpoint" and not has:
        raise WnetConfigError(f"text.encoder = 'checkpoint' but {cfg.init.base} has no text encoder")
    mode = "tags"
    if wants == "checkpoint" or (wants == "auto" and has):
        mode = "sdxl" if unet.get("addition_embed_type") == "text_time" else "clip"
    if mode == "tags":
        if unet.get("addition_embed_type") == "text_time":
            raise WnetConfigError("an SDXL UNet reads two text encoders' pooled output and size ids: it needs "
                                  "text.encoder = 'checkpoint' and an init base that has them")  # fmt: skip
        if unet.get("class_embed_type") not in (None, "projection"):
            raise WnetConfigError(f"UNet class_embed_type {unet.get('class_embed_type')!r} is not supported")
    return mode


def plain_parts(cfg: WnetConfig, space_channels: int) -> Parts:
    """The parts of a config without an init base (tiny, small, a family started from scratch)."""
    if cfg.init.base:
        raise WnetConfigError("a config with init.base needs a prepared run (linepairs train)")
    unet = unet_config(cfg.model, space_channels)
    return Parts(unet, _text_mode(cfg, unet, None), os.path.abspath(cfg.space.vae) if cfg.space.vae else None)


def make_parts(cfg: WnetConfig, run: str) -> tuple[Parts, dict[str, list[str]]]:
    """Resolve the config's parts, writing what the init base brings into RUN/components/.
    Returns the parts and the files each part was read from (for init.json)."""
    from .space import vae_channels

    base = base_of(cfg)
    folder = os.path.join(run, COMPONENTS)
    files: dict[str, list[str]] = {}
    vae = os.path.abspath(cfg.space.vae) if cfg.space.vae else None
    if vae is None and base is not None and base.has_vae:
        model, files["vae"] = base.vae()
        model.save_pretrained(os.path.join(folder, "vae"))
        vae = os.path.join(COMPONENTS, "vae")
    channels = vae_channels(Parts({}, "tags", vae).vae_path(run))
    unet = dict(base.unet_config) if base is not None else unet_config(cfg.model, channels)
    if int(unet.get("in_channels", 4)) != channels:
        where = f"a VAE's {channels}-channel latent space" if vae else "pixel space (3 channels)"
        raise WnetConfigError(f"the UNet takes {unet.get('in_channels')} input channels but the W-net works in "
                              f"{where}; set space.vae to a VAE folder that fits it")  # fmt: skip
    mode = _text_mode(cfg, unet, base)
    if mode != "tags":
        tokenizers, encoders, files["text"] = base.text_parts(cfg.text.tokenizer)
        width = sum(int(e.config.hidden_size) for e in encoders)
        if width != unet.get("cross_attention_dim"):
            raise SourceError(f"{base.path}: its text encoder gives {width}-wide states, the UNet's "
                              f"cross-attention takes {unet.get('cross_attention_dim')}")  # fmt: skip
        for i, (tok, enc) in enumerate(zip(tokenizers, encoders, strict=True)):
            suffix = "" if i == 0 else f"_{i + 1}"
            tok.save_pretrained(os.path.join(folder, f"tokenizer{suffix}"))
            enc.save_pretrained(os.path.join(folder, f"text_encoder{suffix}"))
    return Parts(unet, mode, vae), files


def text_module(cfg: WnetConfig, parts: Parts, vocab_size: int, root: str | None) -> torch.nn.Module:
    if parts.text == "tags":
        pooled = parts.unet.get("class_embed_type") == "projection"
        dim = int(parts.unet["cross_attention_dim"])
        if pooled and int(parts.unet.get("projection_class_embeddings_input_dim") or 0) != dim:
            raise WnetConfigError("the UNet's projection class embedding must take the tag width")
        return TagEmbedding(vocab_size, dim, pooled)
    from .sources import text_model_from, tokenizer_from

    if root is None:
        raise WnetConfigError(
            "a W-net with the checkpoint's text encoder is read inside its run (components/)"
        )
    folder = os.path.join(root, parts.components)
    names = [""] if parts.text == "clip" else ["", "_2"]
    tokenizers = [tokenizer_from(os.path.join(folder, f"tokenizer{s}"), second=False) for s in names]
    encoders = [text_model_from(os.path.join(folder, f"text_encoder{s}")) for s in names]
    for tok, enc in zip(tokenizers, encoders, strict=True):
        enc.config.eos_token_id, enc.config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    return TextEncoders(tokenizers, encoders, cfg.text, sdxl=parts.text == "sdxl")


def build_wnet(cfg: WnetConfig, parts: Parts, vocab_size: int, root: str | None, sketch_stride: int) -> WNet:
    """The W-net of ``parts`` with fresh UNet, sketch and connection weights (seed them before calling);
    ``root``: the run (or exported folder) whose components it reads."""
    return WNet(cfg.model, parts.unet, text_module(cfg, parts, vocab_size, root), sketch_stride)


def saved_names(model: WNet) -> list[str]:
    """The state a checkpoint holds: everything but a frozen text encoder (kept once in components/)."""
    frozen = isinstance(model.text, TextEncoders) and not model.text.trainable
    return [k for k in model.state_dict() if not (frozen and k.startswith("text."))]


def load_weights(model: WNet, weights: dict[str, torch.Tensor], where: str) -> None:
    """Load a checkpoint's (or an export's) tensors: exactly the model's saved names, shapes checked."""
    from .checkpoint import CheckpointError

    own = model.state_dict()
    wanted = saved_names(model)
    missing = sorted(set(wanted) - set(weights))
    extra = sorted(set(weights) - set(wanted))
    bad = [k for k in weights if k in own and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or extra or bad:
        what = (f"lacks {missing[0]}" if missing else f"has {extra[0]}, which the model has no place for"
                if extra else f"{bad[0]} has shape {tuple(weights[bad[0]].shape)}, the model {tuple(own[bad[0]].shape)}")  # fmt: skip
        raise CheckpointError(f"{where}: its weights do not fit the model its config describes: {what}")
    model.load_state_dict(weights, strict=False)


__all__ = ["COMPONENTS", "Parts", "base_of", "build_wnet", "load_weights", "make_parts", "plain_parts",
           "saved_names", "text_module"]  # fmt: skip
