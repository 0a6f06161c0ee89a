"""W-net configuration: presets (``tiny``, ``small``, ``sd``), TOML overrides, and the mismatch check.

One frozen dataclass per concern. The model and diffusion sections define the weights' shape and
meaning: a checkpoint is only usable with the same values there (``check_same``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from typing import Any


class WnetConfigError(ValueError):
    """A config or checkpoint that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    # tiny: narrow at full size (most of a step's cost) and a third level so that attention runs on
    # 1/16 of the pixels (at level 1 of a 64-px input it was a quarter of the step).
    channels: tuple[int, ...] = (16, 32, 64)  # UNet width per resolution level
    res_blocks: int = 1  # ResBlocks per level in the encoder (decoder: one more)
    attn_levels: tuple[int, ...] = (2,)  # levels with self-attention + cross-attention to tags
    heads: int = 4
    groups: int = 8  # GroupNorm groups; must divide every width
    dropout: float = 0.0
    tag_dim: int = 64  # width of the tag embedding (cross-attention context)
    max_tags: int = 16  # tag tokens per sample, including the leading NULL token
    vocab_per_category: int = 2000  # most frequent tags kept per category; the rest map to UNK
    sketch_channels: tuple[int, ...] = (16, 32, 64)  # sketch encoder width per level (same count as channels)
    sketch_blocks: int = 1  # conv blocks per level in the sketch encoder


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "scaled_linear"  # or "cosine"
    timesteps: int = 1000
    # tiny: v-prediction to pure noise, unweighted: a few hundred steps are enough to follow the sketch
    # only if the high-noise steps (where the sketch is the main information) carry the loss; min-SNR
    # weighting scales them by about SNR (~0 there), and epsilon-prediction's x0 is noise-dominated there.
    zero_terminal_snr: bool = True  # Lin et al. 2023; requires prediction = "v"
    prediction: str = "v"  # or "epsilon"
    min_snr_gamma: float = 0.0  # Hang et al. 2023 loss weighting; 0 turns it off


@dataclass(frozen=True)
class SpaceConfig:
    vae: str | None = None  # path of a diffusers AutoencoderKL folder: latent space; None: pixel space


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
    tagset_dropout: float = 0.1  # the whole tag set replaced by NULL
    sketch_dropout: float = 0.1  # the sketch switched off (independent of the tag dropouts)
    flip: float = 0.5  # probability of a horizontal flip (illustration and sketch together)
    extractor: str | None = None  # which line drawing to train on; None: the loader picks one per sample
    weights: str | None = (
        None  # the build's weight version to draw by (OUT/weights/NAME); None: the active one
    )
    heldout: float = 0.1  # fraction of the keys (by hash) never trained on: eval's held-out loss
    buckets: tuple[tuple[int, int], ...] = ()  # (w, h) buckets to train on; empty: every bucket in the build
    grad_checkpointing: bool = False
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    sample_every: int = 100  # sample grid PNG (sketch | generated | target); 0: never
    eval_every: int = 100  # held-out loss into metrics.jsonl; 0: never
    seed: int = 0


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "ddim"  # or "euler"
    steps: int = 20
    guidance_tags: float = 2.0
    guidance_sketch: float = 1.0
    sketch_scale: float = 1.0  # multiplies every injected sketch feature map
    eta: float = 0.0  # DDIM stochasticity


@dataclass(frozen=True)
class WnetConfig:
    name: str = "tiny"
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    space: SpaceConfig = SpaceConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **sections: dict[str, Any]) -> WnetConfig:
        """A copy with some keys of some sections changed: ``cfg.replace(train={"steps": 5})``."""
        return config_from_dict(_merge(self.to_dict(), sections))


PRESETS: dict[str, WnetConfig] = {
    # CPU in minutes at 32-64 px: the demonstration and test config.
    "tiny": WnetConfig(),
    # A few hours on one GPU at 256-512 px.
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
        ),  # fmt: skip
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
        ),  # fmt: skip
    ),
    # SD-1.5-scale UNet in the latent space of an SD VAE: multi-GPU on Ray Train (docs/wnet.md).
    "sd": WnetConfig(
        name="sd",
        model=ModelConfig(
            channels=(320, 640, 1280, 1280),
            res_blocks=2,
            attn_levels=(0, 1, 2, 3),
            heads=8,
            groups=32,
            tag_dim=768,
            max_tags=77,
            vocab_per_category=50000,
            sketch_channels=(320, 640, 1280, 1280),
            sketch_blocks=3,
        ),  # fmt: skip
        diffusion=DiffusionConfig(prediction="v", zero_terminal_snr=True, min_snr_gamma=5.0),
        space=SpaceConfig(vae="/path/to/sd-vae-ft-mse"),
        train=TrainConfig(
            max_side=0,
            batch_size=16,
            steps=500_000,
            lr=5e-5,
            warmup=5000,
            ema_decay=0.9999,
            grad_checkpointing=True,
            log_every=50,
            checkpoint_every=5000,
            sample_every=5000,
        ),  # fmt: skip
        sample=SampleConfig(steps=30, guidance_tags=5.0, guidance_sketch=1.5),
    ),
}

# Keys that give the weights their shape or meaning; any difference makes a checkpoint unusable.
ARCHITECTURE_SECTIONS = ("model", "diffusion", "space")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return out


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _section(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise WnetConfigError(f"[{where}] must be a table")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise WnetConfigError(
            f"unknown key(s) in [{where}]: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {}
    default = cls()
    for key, value in data.items():
        ref = getattr(default, key)
        if isinstance(ref, bool) and not isinstance(value, bool):
            raise WnetConfigError(f"{where}.{key} must be true or false, got {value!r}")
        if isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif (
            isinstance(ref, int | float | str)
            and not isinstance(ref, bool)
            and not isinstance(value, type(ref))
        ):
            raise WnetConfigError(f"{where}.{key} must be {type(ref).__name__}, got {value!r}")
        values[key] = _tuple(value)
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> WnetConfig:
    sections = {"model": ModelConfig, "diffusion": DiffusionConfig, "space": SpaceConfig,
                "train": TrainConfig, "sample": SampleConfig}  # fmt: skip
    unknown = sorted(set(data) - set(sections) - {"name", "preset"})
    if unknown:
        raise WnetConfigError(
            f"unknown top-level key(s): {', '.join(unknown)}; known: name, preset, {', '.join(sections)}"
        )
    base = PRESETS[data["preset"]].to_dict() if "preset" in data else WnetConfig().to_dict()
    merged = _merge(base, {k: v for k, v in data.items() if k != "preset"})
    cfg = WnetConfig(
        name=str(merged.get("name", "custom")),
        **{k: _section(cls, merged.get(k, {}), k) for k, cls in sections.items()},
    )
    check(cfg)
    return cfg


def check(cfg: WnetConfig) -> None:
    m, d, t, s = cfg.model, cfg.diffusion, cfg.train, cfg.sample
    if not m.channels or len(m.sketch_channels) != len(m.channels):
        raise WnetConfigError("model.sketch_channels needs one width per entry of model.channels")
    bad = [c for c in (*m.channels, *m.sketch_channels) if c % m.groups]
    if bad:
        raise WnetConfigError(f"model.groups={m.groups} must divide every width; it does not divide {bad}")
    if any(c % m.heads for i, c in enumerate(m.channels) if i in m.attn_levels or i == len(m.channels) - 1):
        raise WnetConfigError(
            f"model.heads={m.heads} must divide the width of every attention level and the last"
        )
    if any(not 0 <= i < len(m.channels) for i in m.attn_levels):
        raise WnetConfigError(
            f"model.attn_levels {m.attn_levels} must be level numbers below {len(m.channels)}"
        )
    if m.max_tags < 1 or m.res_blocks < 1 or m.sketch_blocks < 1:
        raise WnetConfigError("model.max_tags, model.res_blocks and model.sketch_blocks must be >= 1")
    if d.schedule not in ("scaled_linear", "cosine"):
        raise WnetConfigError(f"diffusion.schedule must be 'scaled_linear' or 'cosine', got {d.schedule!r}")
    if d.prediction not in ("epsilon", "v"):
        raise WnetConfigError(f"diffusion.prediction must be 'epsilon' or 'v', got {d.prediction!r}")
    if d.zero_terminal_snr and d.prediction != "v":
        raise WnetConfigError(
            "diffusion.zero_terminal_snr needs diffusion.prediction = 'v' (epsilon is undefined at SNR 0)"
        )
    if s.sampler not in ("ddim", "euler"):
        raise WnetConfigError(f"sample.sampler must be 'ddim' or 'euler', got {s.sampler!r}")
    for key in ("tag_dropout", "tagset_dropout", "sketch_dropout", "flip", "heldout"):
        if not 0.0 <= getattr(t, key) <= 1.0:
            raise WnetConfigError(f"train.{key} must be within [0, 1]")
    if t.batch_size < 1 or t.steps < 0 or t.log_every < 1 or t.checkpoint_every < 1 or t.keep_checkpoints < 1:
        raise WnetConfigError("train.batch_size, log_every, checkpoint_every, keep_checkpoints must be >= 1")
    if any(len(b) != 2 for b in t.buckets):
        raise WnetConfigError(f"train.buckets must be [w, h] pairs, got {t.buckets}")


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
    return config_from_dict(data)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: {old!r} (checkpoint) vs {new!r} (requested)"]


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
    "ARCHITECTURE_SECTIONS", "PRESETS", "DiffusionConfig", "ModelConfig", "SampleConfig", "SpaceConfig",
    "TrainConfig", "WnetConfig", "WnetConfigError", "check_same", "config_from_dict", "load_config",
]  # fmt: skip
