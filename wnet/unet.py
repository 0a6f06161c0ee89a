"""The W-net's UNet is diffusers' ``UNet2DConditionModel``: its configurations and its two sketch doors.

``unet_config`` gives the diffusers config of a family (SD 1.5, SD 2.1 and SDXL base, as their
``unet/config.json`` publish them) or of the ``custom`` UNet the small presets describe. A config
read from an init checkpoint is used as it is (``wnet.sources``).

``door_shapes`` lists, for an input of a given size, the tensors the two doors diffusers opens take:

- ``down_intrablock_additional_residuals`` (T2I-Adapter style): one per down block, added to the
  hidden state inside the encoder. A cross-attention block takes it after its last layer, before
  its downsampler; a plain block after the whole block, downsampler included (diffusers' rule), so
  that one sits at the next level's resolution.
- ``down_block_additional_residuals`` (ControlNet style): one per skip tensor (conv_in, every
  ResNet/attention layer, every downsampler), added where the decoder reads it, plus
  ``mid_block_additional_residual`` on the middle block's output.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .config import ModelConfig, WnetConfigError

_SD_COMMON = {
    "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-05, "norm_num_groups": 32,
}  # fmt: skip
FAMILY_UNETS: dict[str, dict[str, Any]] = {
    "sd1": {  # runwayml/stable-diffusion-v1-5 (and Anything V3, NAI-derived models)
        **_SD_COMMON, "sample_size": 64, "attention_head_dim": 8, "cross_attention_dim": 768,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    "sd2": {  # stabilityai/stable-diffusion-2-1 (768-v)
        **_SD_COMMON, "sample_size": 96, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
        "use_linear_projection": True, "upcast_attention": True,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    "sdxl": {  # stabilityai/stable-diffusion-xl-base-1.0
        **_SD_COMMON, "sample_size": 128, "attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048,
        "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816, "transformer_layers_per_block": [1, 2, 10],
        "block_out_channels": [320, 640, 1280],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    },
}  # fmt: skip


def custom_unet_config(m: ModelConfig, channels: int) -> dict[str, Any]:
    """The ``custom`` UNet (tiny, small): cross-attention at ``attn_levels`` (and in the middle), the
    learned tags' mean fed through a projection class embedding (SDXL's pooled text vector, in small)."""
    levels = range(len(m.channels))
    return {
        "sample_size": 64, "in_channels": channels, "out_channels": channels,
        "block_out_channels": list(m.channels), "layers_per_block": m.res_blocks,
        "down_block_types": ["CrossAttnDownBlock2D" if i in m.attn_levels else "DownBlock2D" for i in levels],
        "up_block_types": ["CrossAttnUpBlock2D" if i in m.attn_levels else "UpBlock2D" for i in reversed(levels)],
        "norm_num_groups": m.groups, "cross_attention_dim": m.tag_dim, "attention_head_dim": m.heads,
        "dropout": m.dropout, "class_embed_type": "projection", "projection_class_embeddings_input_dim": m.tag_dim,
    }  # fmt: skip


def unet_config(m: ModelConfig, channels: int) -> dict[str, Any]:
    """The diffusers config of ``model.unet`` (without an init base) for a space of ``channels``."""
    if m.unet == "custom":
        return custom_unet_config(m, channels)
    cfg = copy.deepcopy(FAMILY_UNETS[m.unet])
    if cfg["in_channels"] != channels:
        raise WnetConfigError(
            f"model.unet = {m.unet!r} works in a VAE's {cfg['in_channels']}-channel latent space; "
            f"set space.vae (or start from a checkpoint that has a VAE)"
        )
    return cfg


def make_unet(config: dict[str, Any]):
    from diffusers import UNet2DConditionModel

    known = {k: v for k, v in config.items() if not k.startswith("_")}
    return UNet2DConditionModel(**known)


@dataclass(frozen=True)
class Slot:
    """One tensor a door takes: its channels and its level (resolution 1 / 2**level of the input)."""

    channels: int
    level: int


@dataclass(frozen=True)
class Doors:
    adapter: tuple[Slot, ...]  # down_intrablock_additional_residuals, one per down block
    skips: tuple[Slot, ...]  # down_block_additional_residuals, one per skip tensor
    mid: Slot  # mid_block_additional_residual
    levels: int  # resolution levels of the UNet (down blocks)


def door_shapes(config: dict[str, Any]) -> Doors:
    """Where the sketch can enter a UNet of this diffusers config (see the module docstring)."""
    chans = list(config["block_out_channels"])
    n = len(chans)
    types = list(config["down_block_types"])
    per = config.get("layers_per_block", 2)
    per = list(per) if isinstance(per, list | tuple) else [per] * n
    adapter, skips = [], [Slot(chans[0], 0)]
    for i, (c, kind) in enumerate(zip(chans, types, strict=True)):
        final = i == n - 1
        cross = kind.startswith("CrossAttn")
        adapter.append(Slot(c, i if (cross or final) else i + 1))
        skips += [Slot(c, i)] * per[i]
        if not final:
            skips.append(Slot(c, i + 1))
    return Doors(tuple(adapter), tuple(skips), Slot(chans[-1], n - 1), n)


def unet_family(config: dict[str, Any]) -> str:
    """The family of a UNet config: "sdxl" (text_time added embedding), "custom" (a projection class
    embedding: our pooled tags), "sd2" (linear transformer projections) or "sd1"."""
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if config.get("class_embed_type") == "projection":
        return "custom"
    return "sd2" if config.get("use_linear_projection") else "sd1"


__all__ = ["FAMILY_UNETS", "Doors", "Slot", "custom_unet_config", "door_shapes", "make_unet", "unet_config",
           "unet_family"]  # fmt: skip
