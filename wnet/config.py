"""W-net configuration: presets, TOML overrides, and the mismatch check.

One frozen dataclass per concern. The model, diffusion, space, text and init sections define the
weights' shape and meaning: a checkpoint is only usable with the same values there (``check_same``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from groundwork.configtable import diff_dicts, from_table

# The seed's default prompt (Style2Paints V5): "can be used in any illustrations as a default start".
DEFAULT_PROMPT = "1girl, masterpiece, best quality, ultra-detailed, illustration"
UNET_FAMILIES = ("custom", "sd1", "sd2", "sdxl")
DOORS = ("adapter", "skips")


class WnetConfigError(ValueError):
    """A config or checkpoint that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    # "custom": diffusers' UNet2DConditionModel shaped by the keys below (tiny, small); "sd1", "sd2",
    # "sdxl": that family's UNet. With an init base, the UNet is the base's own (its config.json, or
    # read from the single file's keys) and these keys only describe the tag path and the sketch side.
    unet: str = "custom"
    # tiny: narrow at full size (most of a step's cost) and a third level so that attention runs on
    # 1/16 of the pixels (at level 1 of a 64-px input it was a quarter of the step).
    channels: tuple[int, ...] = (16, 32, 64)  # custom UNet width per resolution level
    res_blocks: int = 1  # custom UNet: ResBlocks per level in the encoder (decoder: one more)
    attn_levels: tuple[int, ...] = (
        2,
    )  # custom UNet: levels with self- and cross-attention (the middle always)
    heads: int = 4  # custom UNet: attention heads
    groups: int = 8  # GroupNorm groups (custom UNet and sketch encoder); must divide every width
    dropout: float = 0.0
    tag_dim: int = 64  # learned tag embedding width (the custom UNet's cross-attention width)
    max_tags: int = 16  # tag tokens per sample, including the leading NULL token
    vocab_per_category: int = 2000  # most frequent tags kept per category; the rest map to UNK
    sketch_channels: tuple[int, ...] = (
        16,
        32,
        64,
    )  # sketch encoder width per UNet level (may exceed the UNet's)
    sketch_blocks: int = 1  # conv blocks per level in the sketch encoder
    doors: tuple[str, ...] = DOORS  # where the sketch enters: "adapter" (encoder path), "skips" (+ middle)


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "scaled_linear"  # diffusers beta_schedule: "scaled_linear", "linear", "squaredcos_cap_v2"
    beta_start: float = 0.00085  # Stable Diffusion's
    beta_end: float = 0.012
    timesteps: int = 1000
    # tiny: v-prediction to pure noise, unweighted: a few hundred steps are enough to follow the sketch
    # only if the high-noise steps (where the sketch is the main information) carry the loss; min-SNR
    # weighting scales them by about SNR (~0 there), and epsilon-prediction's x0 is noise-dominated there.
    zero_terminal_snr: bool = True  # Lin et al. 2023 (diffusers' rescale_betas_zero_snr); needs "v"
    prediction: str = "v"  # or "epsilon"
    min_snr_gamma: float = 0.0  # Hang et al. 2023 loss weighting; 0 turns it off


@dataclass(frozen=True)
class SpaceConfig:
    # A diffusers AutoencoderKL folder: latent space. None: the init base's VAE when it has one, else pixels.
    vae: str | None = None


@dataclass(frozen=True)
class TextConfig:
    # "auto": the init base's text encoder(s) when it has them, else learned tags; "tags"; "checkpoint".
    encoder: str = "auto"
    tokenizer: str | None = None  # a tokenizer folder (or a diffusers folder) for a single file without one
    train_encoder: bool = False  # the checkpoint's text encoder is frozen unless this is true
    clip_skip: int = 1  # SD 1.x/2.x: 1 = the last layer; 2 = the one before it (final norm applied)
    caption_order: tuple[str, ...] = ("character", "copyright", "artist", "general")  # sharding.captions
    underscores: bool = False  # keep Danbooru's "_" in captions (kaomoji always keep theirs)


@dataclass(frozen=True)
class InitConfig:
    base: str | None = (
        None  # a diffusers folder or a single-file checkpoint: every UNet tensor unless overridden
    )
    # "prefix" (a UNet module: "down_blocks.1", "mid_block", "up_blocks.0.attentions") -> a model path, or
    # {path = weight, ...}: a weighted merge (weights sum to 1). The longest matching prefix wins.
    blocks: dict[str, Any] = field(default_factory=dict)
    scratch: tuple[str, ...] = ()  # UNet prefixes left at their fresh initialisation
    ema: bool = False  # take a single file's EMA copy (model_ema.*) instead of its trained weights


@dataclass(frozen=True)
class TrainConfig:
    # Longest side the model sees: each batch is area-resized (aspect kept, sides rounded to the
    # model's size multiple) when its bucket is larger; 0 trains at bucket size.
    max_side: int = 64
    batch_size: int = 8
    steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    tag_dropout: float = 0.1  # each tag dropped on its own
    tagset_dropout: float = 0.1  # the whole tag set replaced by NULL (the empty caption)
    sketch_dropout: float = 0.1  # the sketch switched off (independent of the tag dropouts)
    flip: float = 0.5  # probability of a horizontal flip (illustration and sketch together)
    extractor: str | None = None  # which line drawing to train on; None: the loader picks one per sample
    weights: str | None = (
        None  # the build's weight version to draw by (OUT/weights/NAME); None: the active one
    )
    heldout: float = 0.1  # fraction of the keys (by hash) never trained on: eval's held-out loss
    buckets: tuple[tuple[int, int], ...] = ()  # (w, h) buckets to train on; empty: every bucket in the build
    strategy: str = "ddp"  # with --workers: "ddp" (replicated) or "fsdp" (sharded parameters, FSDP2)
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 elsewhere; "bf16" everywhere; "fp32"
    grad_checkpointing: bool = False
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    sample_every: int = 100  # sample grid PNG (sketch | generated | target); 0: never
    eval_every: int = 100  # held-out loss into metrics.jsonl; 0: never
    seed: int = 0


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "ddim"  # diffusers DDIMScheduler, or "euler": EulerDiscreteScheduler
    steps: int = 20
    guidance_tags: float = 2.0
    guidance_sketch: float = 1.0
    sketch_scale: float = 1.0  # multiplies every injected sketch feature map
    eta: float = 0.0  # DDIM stochasticity
    prompt: str = DEFAULT_PROMPT  # `linepairs sample`'s tags when --tags is not given


@dataclass(frozen=True)
class WnetConfig:
    name: str = "tiny"
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    space: SpaceConfig = SpaceConfig()
    text: TextConfig = TextConfig()
    init: InitConfig = InitConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **sections: dict[str, Any]) -> WnetConfig:
        """A copy with some keys of some sections changed: ``cfg.replace(train={"steps": 5})``."""
        data = self.to_dict()
        if "init" in sections and "blocks" in sections["init"]:
            data["init"]["blocks"] = {}  # a table given whole replaces the old one (no key-wise merge)
        return config_from_dict(_merge(data, sections))


_SD_TRAIN = TrainConfig(max_side=0, batch_size=16, steps=500_000, lr=2e-5, warmup=1000, ema_decay=0.9999,
                        grad_checkpointing=True, log_every=50, checkpoint_every=5000, sample_every=5000)  # fmt: skip
_SD_SAMPLE = SampleConfig(steps=30, guidance_tags=7.0, guidance_sketch=1.5)
_SD_DIFFUSION = DiffusionConfig(
    prediction="epsilon", zero_terminal_snr=False
)  # what SD 1.x / SDXL were trained for

PRESETS: dict[str, WnetConfig] = {
    # CPU in minutes at 32-64 px: the demonstration and test config.
    "tiny": WnetConfig(),
    # A few hours on one GPU at 256-512 px, from scratch.
    "small": WnetConfig(
        name="small",
        model=ModelConfig(
            channels=(64, 128, 256, 256),
            res_blocks=2,
            attn_levels=(2, 3),
            heads=8,
            groups=32,
            tag_dim=256,
            max_tags=48,
            vocab_per_category=20000,
            sketch_channels=(96, 192, 384, 384),
            sketch_blocks=2,
        ),
        diffusion=DiffusionConfig(prediction="v", zero_terminal_snr=True, min_snr_gamma=5.0),
        train=TrainConfig(
            max_side=512,
            batch_size=32,
            steps=100_000,
            lr=1e-4,
            warmup=1000,
            ema_decay=0.9999,
            log_every=50,
            checkpoint_every=2000,
            sample_every=2000,
        ),
    ),  # fmt: skip
    # Stable Diffusion 1.x (Anything V3 and its kin) in the VAE's latent space, the seed's recipe:
    # start from a checkpoint (--init); a sketch encoder of 5 blocks a level, so that the W-net has
    # 1.42x SD 2's parameters in all, the extra ones in the sketch side, as the seed's has.
    "sd": WnetConfig(
        name="sd",
        model=ModelConfig(unet="sd1", groups=32, sketch_channels=(320, 640, 1280, 1280), sketch_blocks=5),
        diffusion=_SD_DIFFUSION,
        train=_SD_TRAIN,
        sample=_SD_SAMPLE,
    ),  # fmt: skip
    # Stable Diffusion 2.x (768-v): v-prediction.
    "sd2": WnetConfig(
        name="sd2",
        model=ModelConfig(unet="sd2", groups=32, sketch_channels=(320, 640, 1280, 1280), sketch_blocks=5),
        diffusion=DiffusionConfig(prediction="v", zero_terminal_snr=False),
        train=_SD_TRAIN,
        sample=_SD_SAMPLE,
    ),  # fmt: skip
    # SDXL: two text encoders, pooled embedding and per-sample size/crop conditioning.
    "sdxl": WnetConfig(
        name="sdxl",
        model=ModelConfig(unet="sdxl", groups=32, sketch_channels=(320, 640, 1280), sketch_blocks=4),
        diffusion=_SD_DIFFUSION,
        train=dataclasses.replace(_SD_TRAIN, batch_size=8),
        sample=_SD_SAMPLE,
    ),  # fmt: skip
}
# The preset `--init MODEL` starts from when no --config is given, by the family recognised in MODEL.
FAMILY_PRESETS = {"sd1": "sd", "sd2": "sd2", "sdxl": "sdxl"}

# Keys that give the weights their shape or meaning; any difference makes a checkpoint unusable.
ARCHITECTURE_SECTIONS = ("model", "diffusion", "space", "text", "init")
SECTIONS = {"model": ModelConfig, "diffusion": DiffusionConfig, "space": SpaceConfig, "text": TextConfig,
            "init": InitConfig, "train": TrainConfig, "sample": SampleConfig}  # fmt: skip
# Config keys that hold paths: relative ones in a TOML file are read from the file's folder.
PATH_KEYS = (("space", "vae"), ("text", "tokenizer"), ("init", "base"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def _section(cls, data: Any, where: str):
    return from_table(cls, data, where, error=WnetConfigError)


def config_from_dict(data: dict[str, Any]) -> WnetConfig:
    unknown = sorted(set(data) - set(SECTIONS) - {"name", "preset"})
    if unknown:
        raise WnetConfigError(
            f"unknown top-level key(s): {', '.join(unknown)}; known: name, preset, {', '.join(SECTIONS)}"
        )
    if "preset" in data and data["preset"] not in PRESETS:
        raise WnetConfigError(f"preset {data['preset']!r} is not one of {', '.join(PRESETS)}")
    base = PRESETS[data["preset"]].to_dict() if "preset" in data else WnetConfig().to_dict()
    if isinstance(data.get("init"), dict) and "blocks" in data["init"]:
        base["init"]["blocks"] = {}
    merged = _merge(base, {k: v for k, v in data.items() if k != "preset"})
    cfg = WnetConfig(
        name=str(merged.get("name", "custom")),
        **{k: _section(cls, merged.get(k, {}), k) for k, cls in SECTIONS.items()},
    )
    check(cfg)
    return cfg


def merge_sources(value: Any, where: str) -> list[tuple[str, float]]:
    """An init source as (path, weight) pairs: a path is [(path, 1.0)]; a table is a weighted merge."""
    if isinstance(value, str) and value:
        return [(value, 1.0)]
    if isinstance(value, dict) and value:
        pairs = []
        for path, weight in value.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise WnetConfigError(f"{where}: the weight of {path!r} must be a number, got {weight!r}")
            pairs.append((str(path), float(weight)))
        total = sum(w for _, w in pairs)
        if abs(total - 1.0) > 1e-6:
            raise WnetConfigError(f"{where}: merge weights must sum to 1, they sum to {total:g}")
        return pairs
    raise WnetConfigError(f"{where} must be a model path or a table {{path = weight, ...}}, got {value!r}")


def check(cfg: WnetConfig) -> None:
    m, d, t, s, x, i = cfg.model, cfg.diffusion, cfg.train, cfg.sample, cfg.text, cfg.init
    if m.unet not in UNET_FAMILIES:
        raise WnetConfigError(f"model.unet must be one of {', '.join(UNET_FAMILIES)}, got {m.unet!r}")
    if m.unet == "custom" and (not m.channels or len(m.sketch_channels) != len(m.channels)):
        raise WnetConfigError("model.sketch_channels needs one width per entry of model.channels")
    widths = (*m.channels, *m.sketch_channels) if m.unet == "custom" else m.sketch_channels
    bad = [c for c in widths if c % m.groups]
    if bad:
        raise WnetConfigError(f"model.groups={m.groups} must divide every width; it does not divide {bad}")
    if m.unet == "custom":
        if any(
            c % m.heads for j, c in enumerate(m.channels) if j in m.attn_levels or j == len(m.channels) - 1
        ):
            raise WnetConfigError(
                f"model.heads={m.heads} must divide the width of every attention level and the last"
            )
        if any(not 0 <= j < len(m.channels) for j in m.attn_levels):
            raise WnetConfigError(
                f"model.attn_levels {m.attn_levels} must be level numbers below {len(m.channels)}"
            )
    if m.max_tags < 1 or m.res_blocks < 1 or m.sketch_blocks < 1:
        raise WnetConfigError("model.max_tags, model.res_blocks and model.sketch_blocks must be >= 1")
    if not m.doors or any(door not in DOORS for door in m.doors) or len(set(m.doors)) != len(m.doors):
        raise WnetConfigError(
            f"model.doors must name some of {', '.join(DOORS)} once each, got {list(m.doors)}"
        )
    if d.schedule not in ("scaled_linear", "linear", "squaredcos_cap_v2"):
        raise WnetConfigError(
            f"diffusion.schedule must be 'scaled_linear', 'linear' or 'squaredcos_cap_v2', got {d.schedule!r}"
        )
    if d.prediction not in ("epsilon", "v"):
        raise WnetConfigError(f"diffusion.prediction must be 'epsilon' or 'v', got {d.prediction!r}")
    if d.zero_terminal_snr and d.prediction != "v":
        raise WnetConfigError(
            "diffusion.zero_terminal_snr needs diffusion.prediction = 'v' (epsilon is undefined at SNR 0)"
        )
    if s.sampler not in ("ddim", "euler"):
        raise WnetConfigError(f"sample.sampler must be 'ddim' or 'euler', got {s.sampler!r}")
    if x.encoder not in ("auto", "tags", "checkpoint"):
        raise WnetConfigError(f"text.encoder must be 'auto', 'tags' or 'checkpoint', got {x.encoder!r}")
    if x.clip_skip < 1:
        raise WnetConfigError("text.clip_skip must be >= 1")
    from sharding.captions import CaptionError, CaptionRule

    try:
        CaptionRule(tuple(x.caption_order), x.underscores)
    except CaptionError as exc:
        raise WnetConfigError(f"text.caption_order: {exc}") from None
    for prefix, source in i.blocks.items():
        merge_sources(source, f"init.blocks.{prefix!r}")
    owners = [p for p in i.scratch if p in i.blocks]
    if owners:
        raise WnetConfigError(f"init: {', '.join(owners)} is both in init.blocks and init.scratch")
    if x.encoder == "checkpoint" and not i.base:
        raise WnetConfigError("text.encoder = 'checkpoint' needs init.base (a model with a text encoder)")
    for key in ("tag_dropout", "tagset_dropout", "sketch_dropout", "flip", "heldout"):
        if not 0.0 <= getattr(t, key) <= 1.0:
            raise WnetConfigError(f"train.{key} must be within [0, 1]")
    if t.batch_size < 1 or t.steps < 0 or t.log_every < 1 or t.checkpoint_every < 1 or t.keep_checkpoints < 1:
        raise WnetConfigError("train.batch_size, log_every, checkpoint_every, keep_checkpoints must be >= 1")
    if any(len(b) != 2 for b in t.buckets):
        raise WnetConfigError(f"train.buckets must be [w, h] pairs, got {t.buckets}")
    if t.strategy not in ("ddp", "fsdp"):
        raise WnetConfigError(f"train.strategy must be 'ddp' or 'fsdp', got {t.strategy!r}")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise WnetConfigError(f"train.precision must be 'auto', 'bf16' or 'fp32', got {t.precision!r}")


def _resolve_paths(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """Relative model paths of a TOML file, read from the file's folder (absolute ones unchanged)."""

    def fix(path: Any) -> Any:
        return os.path.normpath(os.path.join(folder, path)) if isinstance(path, str) and path else path

    for section, key in PATH_KEYS:
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section][key] = fix(data[section][key])
    blocks = data.get("init", {}).get("blocks") if isinstance(data.get("init"), dict) else None
    if isinstance(blocks, dict):
        for prefix, source in blocks.items():
            if isinstance(source, dict):
                blocks[prefix] = {fix(p): w for p, w in source.items()}
            else:
                blocks[prefix] = fix(source)
    return data


def load_config(name_or_path: str) -> WnetConfig:
    """A preset name, or a TOML file (optionally ``preset = "tiny"`` plus overriding sections)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    if not os.path.isfile(name_or_path):
        raise WnetConfigError(
            f"unknown config {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a TOML file"
        )
    try:
        with open(name_or_path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise WnetConfigError(f"config {name_or_path} is not valid TOML: {exc}") from None
    data.setdefault("name", os.path.splitext(os.path.basename(name_or_path))[0])
    return config_from_dict(_resolve_paths(data, os.path.dirname(os.path.abspath(name_or_path))))


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    return diff_dicts(old, new, prefix, fmt="{path}: {old!r} (checkpoint) vs {new!r} (requested)")


def check_same(
    saved: dict[str, Any], wanted: WnetConfig, sections: tuple[str, ...] = ARCHITECTURE_SECTIONS
) -> None:
    """Raise naming every key of ``sections`` where a checkpoint's config differs from ``wanted``."""
    want = wanted.to_dict()
    diffs = [d for s in sections for d in differences(saved.get(s), want.get(s), s)]
    if diffs:
        raise WnetConfigError(f"checkpoint was made with config {saved.get('name')!r}, not {wanted.name!r}; differs in "
                              + "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else ""))  # fmt: skip


__all__ = [
    "ARCHITECTURE_SECTIONS", "DEFAULT_PROMPT", "FAMILY_PRESETS", "PRESETS", "DiffusionConfig", "InitConfig",
    "ModelConfig", "SampleConfig", "SpaceConfig", "TextConfig", "TrainConfig", "WnetConfig", "WnetConfigError",
    "check_same", "config_from_dict", "load_config", "merge_sources",
]  # fmt: skip
