"""A tiny Stable Diffusion made offline, in the diffusers folder layout trainers load
(``unet/ vae/ text_encoder/ tokenizer/ scheduler/``), and the small CLIP BPE tokenizer it uses.

The tokenizer files are written by hand (a byte-level vocabulary: every byte as a token and as a
word end, no merges), so that transformers 4 (sd-scripts' environment) and 5 both read them.
The VAE downsamples by 8 (four levels), as ControlNet's conditioning embedding does.
"""

from __future__ import annotations

import json
import os

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 1000  # > the 514 tokens written: room for nothing else, as CLIP's configs require none


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer(folder: str) -> str:
    """A CLIPTokenizer folder (vocab.json, merges.txt, configs); returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({f"{c}</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    with open(os.path.join(folder, "vocab.json"), "w") as fh:
        json.dump(vocab, fh)
    with open(os.path.join(folder, "merges.txt"), "w") as fh:
        fh.write("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": BOS, "eos_token": EOS,
        "unk_token": EOS, "pad_token": EOS, "do_lower_case": True, "errors": "replace",
    }  # fmt: skip
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as fh:
        json.dump(config, fh)
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as fh:
        json.dump({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, fh)
    return folder


def write_tiny_sd(folder: str) -> str:
    """UNet2DConditionModel, AutoencoderKL, CLIPTextModel, tokenizer and DDPMScheduler, tiny and
    random, saved with ``save_pretrained``; returns ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).save_pretrained(os.path.join(folder, "unet"))  # fmt: skip
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    ).save_pretrained(os.path.join(folder, "vae"))  # fmt: skip
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513,
        )
    ).save_pretrained(os.path.join(folder, "text_encoder"))  # fmt: skip
    write_tokenizer(os.path.join(folder, "tokenizer"))
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as fh:
        json.dump(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "DDPMScheduler"],
            },
            fh,
        )
    return folder
