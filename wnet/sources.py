"""Model files an init recipe reads, offline: diffusers folders and single-file checkpoints.

- A **diffusers folder**: a pipeline folder (``model_index.json`` with ``unet/``, and ``vae/``,
  ``text_encoder[_2]/``, ``tokenizer[_2]/``, ``scheduler/`` when it has them) or a UNet folder
  (``config.json`` of a ``UNet2DConditionModel``). Weights: ``*.safetensors`` (also sharded by an
  ``.index.json``, or the ``fp16`` variant) or ``*.bin`` read with ``torch.load(weights_only=True)``.
- A **single file** in the original LDM / A1111 key layout (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.*`` / ``conditioner.embedders.*``): ``.safetensors``,
  or a ``.ckpt``/``.pt`` pickle read with ``weights_only=True`` (a pickle that needs code is refused).
  The family is recognised from the keys: SDXL by its ``label_emb`` (added embedding), SD 2.x by its
  linear transformer projections, SD 1.x otherwise. The UNet config is read from the tensor shapes;
  attention heads are not stored in weights, so they follow the family (SD 1.x: 8 heads; SD 2.x and
  SDXL: 64 channels per head). diffusers' own converters map the keys
  (``create_unet_diffusers_config_from_ldm``, ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``,
  ``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``); the UNet's map is computed on
  key names, so a tensor is read only when a recipe takes it, and every UNet tensor knows the key
  it came from.

A single file carries no tokenizer: ``text.tokenizer`` names a folder that has one (any SD
diffusers folder's ``tokenizer/``; all SD families share CLIP's BPE vocabulary).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch


class SourceError(ValueError):
    """A model file that cannot be used; one line naming the file (and the key)."""


LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class TensorRef:
    file: str  # the file that holds it
    key: str  # its key in that file


def _quiet_diffusers():
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)


# ---------------------------------------------------------------- reading tensors


class _TensorFile:
    """One weight file: its keys and shapes without reading tensors (safetensors), tensors on demand."""

    def __init__(self, path: str):
        self.path = path
        self._loaded: dict[str, torch.Tensor] | None = None
        self.shapes: dict[str, tuple[int, ...]] = {}
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            try:
                with safe_open(path, "pt") as fh:
                    self.shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            except Exception as exc:  # noqa: BLE001 - safetensors on a cut or foreign file: one SourceError line
                raise SourceError(f"{path}: not a readable safetensors file ({_one_line(exc)})") from None
        else:
            self._loaded = _load_pickle(path)
            self.shapes = {k: tuple(v.shape) for k, v in self._loaded.items()}

    def tensor(self, key: str) -> torch.Tensor:
        if self._loaded is not None:
            return self._loaded[key]
        from safetensors import safe_open

        try:
            with safe_open(self.path, "pt") as fh:
                return fh.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 - safetensors on a cut or foreign file: one SourceError line
            raise SourceError(f"{self.path}: cannot read tensor {key} ({_one_line(exc)})") from None

    def tensors(self, keys) -> dict[str, torch.Tensor]:
        if self._loaded is not None:
            return {k: self._loaded[k] for k in keys}
        from safetensors import safe_open

        try:
            with safe_open(self.path, "pt") as fh:
                return {k: fh.get_tensor(k) for k in keys}
        except Exception as exc:  # noqa: BLE001 - safetensors on a cut or foreign file: one SourceError line
            raise SourceError(f"{self.path}: cannot read its tensors ({_one_line(exc)})") from None


def _load_pickle(path: str) -> dict[str, torch.Tensor]:
    """A ``.ckpt``/``.pt``/``.bin`` with ``weights_only=True``: tensors and plain containers only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - the restricted unpickler raises many types; all mean a bad file
        raise SourceError(
            f"{path}: refused: not readable with torch.load(weights_only=True) (a pickle that needs code to "
            f"load is never run; convert it to .safetensors) ({type(exc).__name__})"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise SourceError(f"{path}: not a state dict of tensors")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def tensor_file(path: str) -> _TensorFile:
    """The file's key index, read once per version of the file (size and mtime)."""
    return _tensor_file(path, os.path.getsize(path), os.path.getmtime(path))


@functools.lru_cache(maxsize=32)
def _tensor_file(path: str, size: int, mtime: float) -> _TensorFile:
    return _TensorFile(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


# ---------------------------------------------------------------- a model source


@dataclass
class ModelSource:
    path: str
    layout: str  # "diffusers" or "ldm"
    family: str  # "sd1", "sd2", "sdxl" (ldm); from the UNet config for a diffusers folder
    unet_config: dict[str, Any]
    unet: dict[str, TensorRef]  # diffusers UNet key -> where its tensor is
    scheduler: dict[str, Any] | None = None
    parts: dict[str, str] = field(default_factory=dict)  # "vae", "text_encoder", ... -> folder (diffusers)

    def tensor(self, ref: TensorRef) -> torch.Tensor:
        return tensor_file(ref.file).tensor(ref.key)

    def unet_files(self) -> list[str]:
        return sorted({r.file for r in self.unet.values()})

    @property
    def has_vae(self) -> bool:
        return "vae" in self.parts or (self.layout == "ldm" and _has_prefix(self._file(), LDM_VAE))

    @property
    def has_text(self) -> bool:
        if self.layout == "diffusers":
            return "text_encoder" in self.parts or "text_encoder_2" in self.parts
        f = self._file()
        return any(_has_prefix(f, p) for p in ("cond_stage_model.", "conditioner.embedders."))

    def _file(self) -> _TensorFile:
        return tensor_file(self.path)

    # ------------------------------------------------ VAE

    def vae(self):
        """The source's AutoencoderKL (float32) and the files it was read from."""
        _quiet_diffusers()
        from diffusers import AutoencoderKL

        if self.layout == "diffusers":
            folder = self.parts["vae"]
            try:
                vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32)
            except Exception as exc:  # noqa: BLE001 - diffusers on a user's folder raises what it likes: one SourceError line
                raise SourceError(f"{folder}: not a loadable AutoencoderKL ({_one_line(exc)})") from None
            return vae.float(), weight_files(folder)
        from diffusers.loaders.single_file_utils import (
            convert_ldm_vae_checkpoint,
            create_vae_diffusers_config_from_ldm,
        )

        f = self._file()
        keys = [k for k in f.shapes if k.startswith(LDM_VAE)]
        original = {
            "model": {"params": {"first_stage_config": {"params": {"ddconfig": _vae_params(f.shapes)}}}}
        }
        config = create_vae_diffusers_config_from_ldm(
            original, _meta(f.shapes), scaling_factor=0.13025 if self.family == "sdxl" else 0.18215
        )
        weights = convert_ldm_vae_checkpoint(f.tensors(keys), config)
        vae = AutoencoderKL(**{k: v for k, v in config.items() if k != "sample_size"})
        _load_strict(vae, weights, f"{self.path} (VAE)")
        return vae.float(), [self.path]

    # ------------------------------------------------ text

    def text_parts(self, tokenizer_path: str | None) -> tuple[list[Any], list[torch.nn.Module], list[str]]:
        """(tokenizers, text encoders, files read) in SDXL's order when there are two."""
        _quiet_diffusers()
        if self.layout == "diffusers":
            names = [n for n in ("text_encoder", "text_encoder_2") if n in self.parts]
            encoders = [text_model_from(self.parts[n]) for n in names]
            tok_folders = [self.parts.get(n.replace("text_encoder", "tokenizer")) for n in names]
            if tokenizer_path:
                tok_folders = _tokenizer_folders(tokenizer_path, len(names))
            if any(t is None for t in tok_folders):
                raise SourceError(
                    f"{self.path} has a text encoder but no tokenizer; set text.tokenizer to a tokenizer folder"
                )
            tokenizers = [tokenizer_from(t, second=i == 1) for i, t in enumerate(tok_folders)]
            files = [f for n in names for f in weight_files(self.parts[n])]
        else:
            if not tokenizer_path:
                raise SourceError(
                    f"{self.path} is a single file: it carries a text encoder but no tokenizer; set "
                    "text.tokenizer (or --tokenizer) to a tokenizer folder, e.g. an SD diffusers folder's tokenizer/"
                )
            encoders = _ldm_text_encoders(self._file(), self.family)
            tokenizers = [
                tokenizer_from(t, second=i == 1)
                for i, t in enumerate(_tokenizer_folders(tokenizer_path, len(encoders)))
            ]
            files = [self.path]
        for tok, enc in zip(tokenizers, encoders, strict=True):
            enc.config.eos_token_id = tok.eos_token_id  # the pooled output reads the EOS position
            enc.config.pad_token_id = tok.pad_token_id
        return tokenizers, encoders, files


def _has_prefix(f: _TensorFile, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in f.shapes)


def _meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Shape-only tensors for diffusers' key inspections (no data read)."""
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _load_strict(module: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which the model has no place for"
        raise SourceError(f"{where}: {what} ({len(missing)} missing, {len(extra)} unexpected)")
    for k, v in weights.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise SourceError(f"{where}: {k} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}")
    module.load_state_dict({k: v.float() for k, v in weights.items()})


def _drop_position_ids(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP's ``position_ids`` is a constant buffer some files carry and current transformers does not save."""
    return {k: v for k, v in weights.items() if not k.endswith("position_ids")}


def weight_files(folder: str) -> list[str]:
    """The weight files of a diffusers component folder, in the order they are read."""
    names = sorted(os.listdir(folder))
    for stem in _WEIGHT_NAMES:
        for suffix in (".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"):
            if f"{stem}{suffix}" in names:
                return [os.path.join(folder, f"{stem}{suffix}")]
            index = f"{stem}{suffix}.index.json"
            if index in names:
                with open(os.path.join(folder, index), encoding="utf-8") as fh:
                    shards = sorted(set(json.load(fh)["weight_map"].values()))
                return [os.path.join(folder, s) for s in shards]
    raise SourceError(
        f"{folder}: no weights (diffusion_pytorch_model.safetensors or .bin, or model.safetensors)"
    )


def _tokenizer_folders(path: str, n: int) -> list[str]:
    """``tokenizer/`` (and ``tokenizer_2/``) of a diffusers folder, or one tokenizer folder for all."""
    subs = [os.path.join(path, "tokenizer"), os.path.join(path, "tokenizer_2")]
    if os.path.isdir(subs[0]):
        return [subs[i] if os.path.isdir(subs[i]) else subs[0] for i in range(n)]
    return [path] * n


def tokenizer_from(folder: str, second: bool):
    from transformers import CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers on a user's folder raises what it likes: one SourceError line
        raise SourceError(f"{folder}: not a CLIP tokenizer folder ({_one_line(exc)})") from None
    if tok.model_max_length > 1024:  # a tokenizer saved without its length: CLIP's 77 positions
        tok.model_max_length = 77
    if second and tok.pad_token != "!" and "!" in tok.get_vocab() and "tokenizer_2" not in folder:
        tok.pad_token = "!"  # SDXL's second tokenizer pads with "!" (id 0), as stabilityai ships it
    return tok


def text_model_from(folder: str) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as fh:
            arch = (json.load(fh).get("architectures") or ["CLIPTextModel"])[0]
        cls = CLIPTextModelWithProjection if arch == "CLIPTextModelWithProjection" else CLIPTextModel
        config = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
        model = cls(config)
    except Exception as exc:  # noqa: BLE001 - JSON, then transformers on a user's folder: one SourceError line
        raise SourceError(f"{folder}: not a CLIP text encoder folder ({_one_line(exc)})") from None
    weights: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        weights.update(tensor_file(path).tensors(tensor_file(path).shapes))
    _load_strict(model, _match_wrapper(model, _drop_position_ids(weights)), folder)
    return model.eval()


def _match_wrapper(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers >= 5.6 flattened CLIPTextModel (no ``text_model.`` prefix); weights of either age fit."""
    wrapped = any(k.startswith("text_model.") for k in model.state_dict())
    if wrapped:
        return {k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}": v
                for k, v in weights.items()}  # fmt: skip
    return {k.removeprefix("text_model."): v for k, v in weights.items()}


# ---------------------------------------------------------------- single-file text encoders


def _clip_config(shapes, prefix: str, openclip: bool, drop_last: bool = False):
    from transformers import CLIPTextConfig

    if openclip:
        tok, pos = shapes[prefix + "token_embedding.weight"], shapes[prefix + "positional_embedding"]
        layer = prefix + "transformer.resblocks."
        fc1 = shapes[layer + "0.mlp.c_fc.weight"]
    else:
        tok = shapes[prefix + "text_model.embeddings.token_embedding.weight"]
        pos = shapes[prefix + "text_model.embeddings.position_embedding.weight"]
        layer = prefix + "text_model.encoder.layers."
        fc1 = shapes[layer + "0.mlp.fc1.weight"]
    layers = len({k[len(layer) :].split(".")[0] for k in shapes if k.startswith(layer)})
    hidden = tok[1]
    proj = shapes.get(prefix + "text_projection")
    return CLIPTextConfig(
        vocab_size=tok[0], hidden_size=hidden, intermediate_size=fc1[0], max_position_embeddings=pos[0],
        num_hidden_layers=layers - (1 if drop_last else 0), num_attention_heads=max(1, hidden // 64),
        hidden_act="gelu" if openclip else "quick_gelu", projection_dim=proj[1] if proj else hidden,
    )  # fmt: skip


def _ldm_text_encoders(f: _TensorFile, family: str) -> list[torch.nn.Module]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    shapes = f.shapes

    def load(prefix: str) -> dict[str, torch.Tensor]:
        return f.tensors([k for k in shapes if k.startswith(prefix)])

    out = []
    if family == "sdxl":
        clip = CLIPTextModel(_clip_config(shapes, "conditioner.embedders.0.transformer.", openclip=False))
        _load_strict(clip, _match_wrapper(clip, _drop_position_ids(convert_ldm_clip_checkpoint(load("conditioner.embedders.0.")))),
                     f"{f.path} (text encoder 1)")  # fmt: skip
        prefix = "conditioner.embedders.1.model."
        big = CLIPTextModelWithProjection(_clip_config(shapes, prefix, openclip=True))
        weights = convert_open_clip_checkpoint(big, load(prefix), prefix=prefix)
        _load_strict(big, _match_wrapper(big, weights), f"{f.path} (text encoder 2)")
        out = [clip, big]
    elif _has_prefix(f, "cond_stage_model.model."):  # OpenCLIP (SD 2.x): its last layer is never read
        prefix = "cond_stage_model.model."
        count = len({k.split(".")[4] for k in shapes if k.startswith(prefix + "transformer.resblocks.")})
        model = CLIPTextModel(_clip_config(shapes, prefix, openclip=True, drop_last=count == 24))
        weights = convert_open_clip_checkpoint(model, load(prefix), prefix=prefix)
        weights.pop("text_projection.weight", None)
        _load_strict(model, _match_wrapper(model, weights), f"{f.path} (text encoder)")
        out = [model]
    elif _has_prefix(f, "cond_stage_model.transformer."):
        model = CLIPTextModel(_clip_config(shapes, "cond_stage_model.transformer.", openclip=False))
        weights = _drop_position_ids(convert_ldm_clip_checkpoint(load("cond_stage_model.transformer.")))
        _load_strict(model, _match_wrapper(model, weights), f"{f.path} (text encoder)")
        out = [model]
    else:
        raise SourceError(f"{f.path}: no text encoder keys (cond_stage_model.* or conditioner.embedders.*)")
    return [m.eval() for m in out]


# ---------------------------------------------------------------- single-file UNet and VAE configs


def _vae_params(shapes) -> dict[str, Any]:
    p = LDM_VAE + "encoder."
    ch = shapes[p + "conv_in.weight"][0]
    levels = sorted({int(k[len(p) :].split(".")[1]) for k in shapes if k.startswith(p + "down.")})
    mult = [shapes[f"{p}down.{i}.block.0.conv2.weight"][0] // ch for i in levels]
    blocks = len({k.split(".")[5] for k in shapes if k.startswith(p + "down.0.block.")})
    return {"ch": ch, "ch_mult": mult, "z_channels": shapes[p + "conv_out.weight"][0] // 2,
            "num_res_blocks": blocks, "in_channels": shapes[p + "conv_in.weight"][1],
            "out_ch": shapes[LDM_VAE + "decoder.conv_out.weight"][0]}  # fmt: skip


def ldm_family(shapes: dict[str, tuple[int, ...]]) -> str:
    """SDXL (its added embedding ``label_emb``), SD 2.x (linear transformer projections), else SD 1.x."""
    if LDM_UNET + "label_emb.0.0.weight" in shapes:
        return "sdxl"
    proj = [s for k, s in shapes.items() if k.startswith(LDM_UNET) and k.endswith(".proj_in.weight")]
    return "sd2" if proj and len(proj[0]) == 2 else "sd1"


def _unet_params(shapes: dict[str, tuple[int, ...]], family: str) -> dict[str, Any]:
    """The LDM ``unet_config`` params of a single file, read from its tensor shapes."""
    p = LDM_UNET
    model_channels = shapes[p + "input_blocks.0.0.weight"][0]
    blocks = sorted({int(k[len(p) :].split(".")[1]) for k in shapes if k.startswith(p + "input_blocks.")})
    level, mult, per_level, attention, depth = 0, [], [0], set(), {}
    for i in blocks[1:]:
        if p + f"input_blocks.{i}.0.op.weight" in shapes:  # a downsampler: the next level starts
            level += 1
            per_level.append(0)
            continue
        if len(mult) == level:
            mult.append(shapes[p + f"input_blocks.{i}.0.out_layers.3.weight"][0] // model_channels)
        per_level[level] += 1
        t = p + f"input_blocks.{i}.1.transformer_blocks."
        layers = {k[len(t) :].split(".")[0] for k in shapes if k.startswith(t)}
        if layers:
            attention.add(2**level)
            depth[level] = len(layers)
    if len(set(per_level)) != 1:
        raise SourceError(
            f"unusual UNet: {per_level} ResNet layers per level (diffusers needs the same number)"
        )
    contexts = [s[1] for k, s in shapes.items() if k.startswith(p) and k.endswith("attn2.to_k.weight")]
    widths = [model_channels * m for m in mult]
    # Heads are not in the weights: the family's rule (SD 1.x: 8; SD 2.x and SDXL: 64 channels a head).
    heads = 8 if family == "sd1" else [max(1, w // 64) for w in widths]
    params: dict[str, Any] = {
        "in_channels": shapes[p + "input_blocks.0.0.weight"][1], "out_channels": shapes[p + "out.2.weight"][0],
        "model_channels": model_channels, "channel_mult": mult, "num_res_blocks": per_level[0],
        "attention_resolutions": sorted(attention), "context_dim": contexts[0] if contexts else None,
        "use_linear_in_transformer": family != "sd1", "num_heads": heads,
        "transformer_depth": [depth.get(i, 1) for i in range(len(mult))] if family == "sdxl" else 1,
    }  # fmt: skip
    if family == "sdxl":
        params["num_classes"] = "sequential"
        params["adm_in_channels"] = shapes[p + "label_emb.0.0.weight"][1]
    return params


def _ldm_unet(f: _TensorFile, family: str, ema: bool) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """The diffusers UNet config of a single file and, per diffusers key, the file key it comes from."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        create_unet_diffusers_config_from_ldm,
    )

    params = _unet_params(f.shapes, family)
    original = {"model": {"params": {
        "unet_config": {"params": params},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
    }}}  # fmt: skip
    config = create_unet_diffusers_config_from_ldm(original, _meta(f.shapes))
    if family == "sdxl":  # diffusers tells SDXL by a 2048/1280 context; a narrow SDXL has another width
        config.update(
            class_embed_type=None,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=params["adm_in_channels"],
        )
        config["transformer_layers_per_block"] = [
            (d if t.startswith("CrossAttn") else 1)
            for d, t in zip(params["transformer_depth"], config["down_block_types"], strict=True)
        ]
    if ema and sum(k.startswith("model_ema.") for k in f.shapes) <= 100:
        raise SourceError(f"{f.path}: init.ema is set but the file has no EMA weights (model_ema.*)")
    names = {k: k for k in f.shapes}  # convert key names, not tensors: nothing is read yet
    mapped = convert_ldm_unet_checkpoint(names, config, extract_ema=ema)
    refs = {k: TensorRef(f.path, v) for k, v in mapped.items() if isinstance(v, str)}
    if not ema:
        taken = {r.key for r in refs.values()}
        left = sorted(k for k in f.shapes if k.startswith(LDM_UNET) and k not in taken)
        if left:
            raise SourceError(f"{f.path}: UNet tensor {left[0]} has no place in a diffusers UNet "
                              f"({len(left)} such keys); is this a Stable Diffusion checkpoint?")  # fmt: skip
    return config, refs


# ---------------------------------------------------------------- opening


def open_source(path: str, ema: bool = False) -> ModelSource:
    """A diffusers folder or a single-file checkpoint, recognised and mapped (no tensor read)."""
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such model file or folder")
    return _open_source(path, ema, os.path.getmtime(path))


@functools.lru_cache(maxsize=16)
def _open_source(path: str, ema: bool, mtime: float) -> ModelSource:
    _quiet_diffusers()
    if os.path.isdir(path):
        if ema:
            raise SourceError(
                f"{path}: init.ema reads a single file's EMA copy; a diffusers folder holds one set of weights"
            )
        return _diffusers_source(path)
    if not path.lower().endswith(SINGLE_FILE_SUFFIXES):
        raise SourceError(
            f"{path}: not a model file ({', '.join(SINGLE_FILE_SUFFIXES)}) nor a diffusers folder"
        )
    f = tensor_file(path)
    if not any(k.startswith(LDM_UNET) for k in f.shapes):
        if "conv_in.weight" in f.shapes and any(k.startswith("down_blocks.") for k in f.shapes):
            raise SourceError(
                f"{path}: a UNet in diffusers' key layout needs its config.json: put both in a folder"
            )
        raise SourceError(f"{path}: no Stable Diffusion UNet in it (no {LDM_UNET}* keys)")
    family = ldm_family(f.shapes)
    config, refs = _ldm_unet(f, family, ema)
    return ModelSource(path, "ldm", family, config, refs)


def _diffusers_source(path: str) -> ModelSource:
    from .unet import unet_family

    parts: dict[str, str] = {}
    scheduler = None
    if os.path.isfile(os.path.join(path, "model_index.json")):
        for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
            if os.path.isdir(os.path.join(path, name)):
                parts[name] = os.path.join(path, name)
        sched = os.path.join(path, "scheduler", "scheduler_config.json")
        if os.path.isfile(sched):
            with open(sched, encoding="utf-8") as fh:
                scheduler = json.load(fh)
        unet_dir = parts.pop("unet", None)
        if unet_dir is None:
            raise SourceError(f"{path}: a diffusers pipeline folder without unet/")
    else:
        unet_dir = path
    config_path = os.path.join(unet_dir, "config.json")
    try:
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        raise SourceError(
            f"{path}: not a diffusers model folder (no model_index.json, no readable config.json)"
        ) from None
    if config.get("_class_name") not in (None, "UNet2DConditionModel"):
        raise SourceError(f"{config_path}: a {config['_class_name']}, not a UNet2DConditionModel")
    refs: dict[str, TensorRef] = {}
    for file in weight_files(unet_dir):
        for key in tensor_file(file).shapes:
            refs[key] = TensorRef(file, key)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return ModelSource(path, "diffusers", unet_family(config), config, refs, scheduler, parts)


def family_of(path: str) -> str:
    """The SD family of a model path, for picking a preset ("sd1", "sd2", "sdxl", "custom")."""
    return open_source(os.path.abspath(path)).family


__all__ = ["ModelSource", "SourceError", "TensorRef", "family_of", "ldm_family", "open_source",
           "tensor_file", "text_model_from", "tokenizer_from", "weight_files"]  # fmt: skip
