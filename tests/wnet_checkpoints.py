"""Random-weight Stable Diffusion checkpoints for the W-net tests, made in the test (no model hub here).

``make_sd`` builds diffusers models with a family's block layout (SD 1.5, SD 2.x or SDXL) at narrow
widths, saves them as a diffusers pipeline folder, and ``write_ldm`` writes the same tensors as one
file in the original LDM / A1111 key layout. The LDM renaming here is written from the original
Stable Diffusion key layout (CompVis' ``model.diffusion_model.input_blocks...``, the
``first_stage_model`` VAE with 1x1-conv attention, OpenCLIP's packed ``in_proj``), independently
of the converters the W-net uses to read it, so a wrong mapping on either side shows up as a
mismatch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save_file

# SD 1.5's block layout at narrow widths (GroupNorm 32 needs multiples of 32).
WIDTHS = {"sd1": (32, 64, 64, 64), "sd2": (32, 64, 64, 64), "sdxl": (32, 64, 64)}
SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]


def byte_vocab() -> dict[str, int]:
    """A CLIP byte-level BPE vocabulary with no merges: every byte, alone and word-final."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    base = list(bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(folder: str, pad: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(vocab=byte_vocab(), merges=[], pad_token=pad)
    tok.model_max_length = 77
    tok.save_pretrained(folder)
    return tok


def _text_config(tok, hidden: int, projection: bool):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=max(1, hidden // 64), max_position_embeddings=77, projection_dim=hidden,
        hidden_act="gelu" if projection else "quick_gelu", bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


@dataclass
class SD:
    family: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    folder: str


def make_sd(root: str, family: str = "sd1", seed: int = 0, vae_levels: int = 2) -> SD:
    """A narrow random-weight SD model of ``family`` saved as a diffusers pipeline folder ``root``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    widths = WIDTHS[family]
    os.makedirs(root, exist_ok=True)
    pads = ["<|endoftext|>"] if family != "sdxl" else ["<|endoftext|>", "!"]
    tokenizers = [
        write_tokenizer(os.path.join(root, "tokenizer" + ("_2" if i else "")), p) for i, p in enumerate(pads)
    ]
    if family == "sdxl":
        hidden = [64, 128]
        encoders = [CLIPTextModel(_text_config(tokenizers[0], 64, False)),
                    CLIPTextModelWithProjection(_text_config(tokenizers[1], 128, True))]  # fmt: skip
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=widths,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            cross_attention_dim=sum(hidden), attention_head_dim=[max(1, w // 64) for w in widths],
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=128 + 6 * 256, transformer_layers_per_block=[1, 1, 2],
            norm_num_groups=32,
        )  # fmt: skip
    else:
        hidden = 64 if family == "sd1" else 128
        encoders = [CLIPTextModel(_text_config(tokenizers[0], hidden, family == "sd2"))]
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=widths,
            down_block_types=SD_DOWN, up_block_types=SD_UP, cross_attention_dim=hidden,
            attention_head_dim=8 if family == "sd1" else [max(1, w // 64) for w in widths],
            use_linear_projection=family == "sd2", norm_num_groups=32,
        )  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(32,) * vae_levels, down_block_types=("DownEncoderBlock2D",) * vae_levels,
                        up_block_types=("UpDecoderBlock2D",) * vae_levels, layers_per_block=1, latent_channels=4,
                        norm_num_groups=32, sample_size=32)  # fmt: skip
    for module in (unet, vae, *encoders):  # random, but not the near-zero default of some layers
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        module.eval()
    unet.save_pretrained(os.path.join(root, "unet"))
    vae.save_pretrained(os.path.join(root, "vae"))
    for i, enc in enumerate(encoders):
        enc.save_pretrained(os.path.join(root, "text_encoder" + ("_2" if i else "")))
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type="v_prediction" if family == "sd2" else "epsilon").save_pretrained(
        os.path.join(root, "scheduler"))  # fmt: skip
    index = {"_class_name": "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}  # fmt: skip
    with open(os.path.join(root, "model_index.json"), "w") as fh:
        json.dump(index, fh)
    return SD(family, unet, vae, encoders, tokenizers, root)


# ---------------------------------------------------------------- the LDM / A1111 layout


_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip


def _resnet(key: str) -> str:
    head, _, tail = key.partition(".")
    return f"{_RESNET[head]}.{tail}"


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel -> ``model.diffusion_model.*`` (CompVis' openaimodel.py layout)."""
    cfg = unet.config
    per = cfg.layers_per_block
    out: dict[str, torch.Tensor] = {}
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # fmt: skip
    up_has_attn = [t.startswith("CrossAttn") for t in cfg.up_block_types]
    for key, value in unet.state_dict().items():
        parts = key.split(".")
        name = None
        for prefix, ldm in top.items():
            if key.startswith(prefix + "."):
                name = ldm + key[len(prefix) :]
        if parts[0] == "down_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                name = f"input_blocks.{i * (per + 1) + j + 1}.0.{_resnet(rest)}"
            elif kind == "attentions":
                name = f"input_blocks.{i * (per + 1) + j + 1}.1.{rest}"
            else:  # downsamplers.0.conv.*
                name = f"input_blocks.{(i + 1) * (per + 1)}.0.op.{parts[-1]}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            name = f"middle_block.{2 * j}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                name = f"output_blocks.{i * (per + 1) + j}.0.{_resnet(rest)}"
            elif kind == "attentions":
                name = f"output_blocks.{i * (per + 1) + j}.1.{rest}"
            else:  # upsamplers.0.conv.*
                name = f"output_blocks.{i * (per + 1) + per}.{2 if up_has_attn[i] else 1}.conv.{parts[-1]}"
        assert name is not None, key
        out["model.diffusion_model." + name] = value
    return out


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL -> ``first_stage_model.*`` (attention as 1x1 convolutions)."""
    levels = len(vae.config.block_out_channels)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in vae.state_dict().items():
        name = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        p = name.split(".")
        if p[1] == "down_blocks":
            i = p[2]
            name = (f"{p[0]}.down.{i}.block.{p[4]}." + ".".join(p[5:]) if p[3] == "resnets"
                    else f"{p[0]}.down.{i}.downsample.conv.{p[-1]}")  # fmt: skip
        elif p[1] == "up_blocks":
            i = levels - 1 - int(p[2])
            name = (f"{p[0]}.up.{i}.block.{p[4]}." + ".".join(p[5:]) if p[3] == "resnets"
                    else f"{p[0]}.up.{i}.upsample.conv.{p[-1]}")  # fmt: skip
        elif p[1] == "mid_block" and p[2] == "resnets":
            name = f"{p[0]}.mid.block_{int(p[3]) + 1}." + ".".join(p[4:])
        elif p[1] == "mid_block":
            inner = ".".join(p[4:-1])
            name = f"{p[0]}.mid.attn_1.{attn[inner]}.{p[-1]}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + name] = value
    return out


def clip_to_ldm(encoder, prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel in the HF layout under ``prefix`` (SD 1.x, SDXL's first encoder)."""
    return {
        prefix + "text_model." + k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()
    }


def openclip_to_ldm(encoder, prefix: str) -> dict[str, torch.Tensor]:
    """A CLIP text model in OpenCLIP's layout (SD 2.x, SDXL's second encoder): packed in_proj, c_fc/c_proj."""
    sd = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"], prefix + "ln_final.bias": sd["final_layer_norm.bias"]}  # fmt: skip
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    n = encoder.config.num_hidden_layers
    for i in range(n):
        a, b = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for w in ("weight", "bias"):
            out[b + f"attn.in_proj_{w}"] = torch.cat([sd[a + f"self_attn.{q}_proj.{w}"] for q in "qkv"])
            out[b + f"attn.out_proj.{w}"] = sd[a + f"self_attn.out_proj.{w}"]
            out[b + f"ln_1.{w}"], out[b + f"ln_2.{w}"] = (
                sd[a + f"layer_norm1.{w}"],
                sd[a + f"layer_norm2.{w}"],
            )
            out[b + f"mlp.c_fc.{w}"], out[b + f"mlp.c_proj.{w}"] = (
                sd[a + f"mlp.fc1.{w}"],
                sd[a + f"mlp.fc2.{w}"],
            )
    return out


def write_ldm(sd: SD, path: str, vae: bool = True, text: bool = True, extra: dict | None = None) -> str:
    """The model as one ``.safetensors`` in the LDM / A1111 layout (what Civitai-style files hold)."""
    out = unet_to_ldm(sd.unet)
    if vae:
        out.update(vae_to_ldm(sd.vae))
    if text and sd.family == "sd1":
        out.update(clip_to_ldm(sd.text_encoders[0], "cond_stage_model.transformer."))
    elif text and sd.family == "sd2":
        out.update(openclip_to_ldm(sd.text_encoders[0], "cond_stage_model.model."))
    elif text:
        out.update(clip_to_ldm(sd.text_encoders[0], "conditioner.embedders.0.transformer."))
        out.update(openclip_to_ldm(sd.text_encoders[1], "conditioner.embedders.1.model."))
    out.update(extra or {})
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    return path


__all__ = ["SD", "make_sd", "write_ldm", "write_tokenizer"]
