"""Build configuration: every default lives here, loaded from TOML and checked strictly."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

import lineart
from curation.dedup import DedupConfig
from curation.filters import FilterConfig
from curation.metrics import MetricThresholds
from curation.quality import QualityConfig
from curation.scan import ScanConfig
from curation.sources import SidecarConfig
from curation.weighting import WeightConfig
from groundwork.configtable import from_table
from lineart.augment import AugmentPolicy
from lineart.quality import PairQuality
from sharding.buckets import BucketRule


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and the problem."""


@dataclass(frozen=True)
class ShardConfig:
    samples_per_shard: int = 256
    image_format: str = "jpg"  # "jpg" or "webp" (webp costs ~30x the CPU to encode)
    jpeg_quality: int = 95
    webp_quality: int = 90


@dataclass(frozen=True)
class PoolConfig:
    """An actor pool's size (``[materialize]``, ``[scoring]``): the one shape is
    ``pipelines.distribute.pool_shape``."""

    actors: int = 0  # 0: one per gpu_share of the GPUs when there are GPUs, else one per CPU (its share)
    gpu_share: float = 0.25  # share of one GPU each actor asks Ray for when the cluster has GPUs


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


DEFAULT_EXTRACTORS = (ExtractorSpec("canny"), ExtractorSpec("xdog"))


@dataclass(frozen=True)
class ScorerSpec:
    """One ``[scorers.NAME]`` table: a learned scorer of curation.scorers, run in the scan."""

    name: str
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoringConfig(PoolConfig):
    """``[scoring]``: the scan's scorer actors (used only when ``[scorers.*]`` names a scorer); on
    CPUs one per 2 CPUs by default (the other half decodes, pipelines/scoring.py)."""

    fill_tags: bool = True  # records without tags of their own take the predicted tags (tags_general)


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    scan: ScanConfig = ScanConfig()
    buckets: BucketRule = BucketRule()
    weights: WeightConfig = WeightConfig()
    shards: ShardConfig = ShardConfig()
    extractors: tuple[ExtractorSpec, ...] = DEFAULT_EXTRACTORS
    scorers: tuple[ScorerSpec, ...] = ()  # [scorers.NAME] tables (docs/curation.md, "Learned scorers")
    scoring: ScoringConfig = ScoringConfig()
    # [materialize]: the extractor actors (a classical build: how many shard tasks at once)
    materialize: PoolConfig = PoolConfig()
    augment: AugmentPolicy = AugmentPolicy()  # off by default; docs/lineart.md
    pair_quality: PairQuality = PairQuality()
    # curation (defaults and their reasons: curation/*.py and docs/curation.md)
    filters: FilterConfig = FilterConfig()
    metrics: MetricThresholds = MetricThresholds()
    quality: QualityConfig = QualityConfig()
    dedup: DedupConfig = DedupConfig()
    # [[sources]] tables (name, kind, path, images, share, era), paths made absolute; used with the
    # command line's SOURCE arguments (curation.sources.source_from_table)
    sources: tuple[dict[str, Any], ...] = ()
    # [sidecars]: caption file extensions and the tag table of every source (docs/sources.md)
    sidecars: SidecarConfig = SidecarConfig()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _section(cls, data: Any, where: str):
    """A config section through its own ``from_dict`` when it has one, else the strict table parser."""
    try:
        return cls.from_dict(data) if hasattr(cls, "from_dict") else from_table(cls, data, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _extractors(data: Any, base_dir: str | None = None) -> tuple[ExtractorSpec, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError("[[extractors]] must be a non-empty list of tables with a 'name'")
    specs = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"extractors[{i}] needs a 'name'")
        unknown = sorted(set(item) - {"name", "weights", "options"})
        if unknown:
            raise ConfigError(f"extractors[{i}] has unknown key(s) {', '.join(unknown)}")
        name = item["name"]
        if name not in lineart.available():
            raise ConfigError(
                f"extractors[{i}]: unknown extractor {name!r}; available: {', '.join(lineart.available())}"
            )
        options = item.get("options", {})
        try:
            lineart.check_options(name, options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"extractors[{i}] ({name}): {exc}") from None
        weights = item.get("weights")
        if weights is not None and not isinstance(weights, str):
            raise ConfigError(f"extractors[{i}] ({name}): weights must be a path string, got {weights!r}")
        if weights is not None:  # like [[sources]] paths: relative to the config file's folder
            weights = os.path.expanduser(weights)
            if base_dir is not None and not os.path.isabs(weights):
                weights = os.path.abspath(os.path.join(base_dir, weights))
        specs.append(ExtractorSpec(name, weights, dict(options)))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"an extractor is listed twice: {names}")
    return tuple(specs)


def _scorers(data: Any) -> tuple[ScorerSpec, ...]:
    from curation import scorers

    if not isinstance(data, dict):
        raise ConfigError("[scorers] must hold one table per scorer, e.g. [scorers.wd_tagger]")
    specs = []
    for name, table in sorted(data.items()):
        if name not in scorers.available():
            raise ConfigError(
                f"[scorers.{name}]: unknown scorer; available: {', '.join(scorers.available())}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[scorers.{name}] must be a table (weights = ..., options)")
        options = {k: v for k, v in table.items() if k != "weights"}
        weights = table.get("weights")
        if weights is not None and not isinstance(weights, str):
            raise ConfigError(f"scorers.{name}.weights must be a path string, got {weights!r}")
        try:
            scorers.check_options(name, options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[scorers.{name}]: {exc}") from None
        specs.append(ScorerSpec(name, weights, options))
    return tuple(specs)


def _sources(data: Any, base_dir: str | None) -> tuple[dict[str, Any], ...]:
    from curation.sources import SourceError, check_table, is_remote_table, source_from_table

    if not isinstance(data, list):
        raise ConfigError("[[sources]] must be an array of tables")
    out = []
    for i, table in enumerate(data):
        try:
            if is_remote_table(table):  # opened by the command, with its --storage-option settings
                check_table(table)
                out.append(dict(table))
                continue
            spec = source_from_table(table, base_dir)
        except SourceError as exc:
            raise ConfigError(f"sources[{i}]: {exc}") from None
        out.append({**table, "path": spec.path, **({"images": spec.images} if spec.images else {})})
    return tuple(out)


def _sidecars(data: Any, base_dir: str | None) -> SidecarConfig:
    """``[sidecars]``, its tag table made absolute (relative to the config's folder) and read once."""
    from curation.sources import SourceError, load_tag_table

    cfg = _section(SidecarConfig, data, "sidecars")
    if not cfg.tag_table:
        return cfg
    path = os.path.expanduser(cfg.tag_table)
    if base_dir is not None and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    path = os.path.abspath(path)
    try:
        load_tag_table(path)
    except SourceError as exc:
        raise ConfigError(f"sidecars.tag_table: {exc}") from None
    return dataclasses.replace(cfg, tag_table=path)


def non_finite(data: Any, where: str = "") -> str | None:
    """The key path of the first NaN or infinite number in a TOML document (TOML spells them
    ``nan`` and ``inf``); None when every number is finite."""
    if isinstance(data, float) and not math.isfinite(data):
        return where or "value"
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = ((f"[{i}]", v) for i, v in enumerate(data))
    else:
        return None
    for key, value in items:
        path = f"{where}{key}" if str(key).startswith("[") else f"{where}.{key}" if where else str(key)
        found = non_finite(value, path)
        if found:
            return found
    return None


_POOL_RANGES = {"actors": (0, 100_000), "gpu_share": (0.001, 1)}  # [materialize], [scoring]
# Ranges of the numbers every build reads (the sections that check their own: curation.*, lineart.*).
# Bounds keep every loop and allocation they drive finite: a bucket walk of max_side / step steps,
# a SIGALRM deadline, an encoder's quality, a seed numpy takes.
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "scan": {"max_pixels": (1, 2**32), "max_bytes": (1, 2**36), "max_seconds": (0, 86_400),
             "min_side": (1, 65_536), "max_aspect": (1, 1_000), "chunk_size": (0, 1_000_000)},
    "buckets": {"max_area": (1, 16_384**2), "step": (1, 4_096), "min_side": (1, 16_384),
                "max_side": (1, 16_384), "max_upscale": (0, 64)},
    "shards": {"samples_per_shard": (1, 1_000_000), "jpeg_quality": (1, 100), "webp_quality": (1, 100)},
    "materialize": _POOL_RANGES,
    "scoring": _POOL_RANGES,
    "quality": {"scorer_size": (8, 4_096), "scorer_batch": (1, 4_096),
                **{f"{k}_weight": (0, 1e6) for k in ("score", "fav", "aesthetic", "learned", "illustration",
                   "fills", "sharpness", "resolution", "colorfulness", "jpeg", "clean", "edge")}},
}  # fmt: skip
SEED_MAX = 2**63 - 1


def check_ranges(cfg: BuildConfig) -> None:
    """ConfigError naming the first number of ``cfg`` outside its range (``_RANGES``)."""
    if 0 < cfg.scan.max_seconds < 1e-6:  # setitimer rounds it to 0, which turns the deadline off
        raise ConfigError(
            f"scan.max_seconds must be 0 (no deadline) or >= 1e-6, got {cfg.scan.max_seconds!r}"
        )
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"seed must be an integer in [0, 2**63 - 1], got {cfg.seed}")
    for section, keys in _RANGES.items():
        table = getattr(cfg, section)
        for key, (lo, hi) in keys.items():
            value = getattr(table, key)
            if not lo <= value <= hi:
                raise ConfigError(f"{section}.{key} must be in [{lo:g}, {hi:g}], got {value!r}")


def config_from_dict(data: dict[str, Any], base_dir: str | None = None) -> BuildConfig:
    bad = non_finite(data)
    if bad:  # nan would pass every comparison below it; inf would be a loop or a clip without end
        raise ConfigError(
            f"{bad} is not a finite number (nan and inf are refused; leave a key out for its default)"
        )
    known = {"seed", "scan", "buckets", "weights", "shards", "extractors", "materialize", "augment", "pair_quality",
             "filters", "metrics", "quality", "dedup", "sources", "scorers", "scoring", "sidecars"}  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    cfg = BuildConfig(
        seed=seed,
        scan=_section(ScanConfig, data.get("scan", {}), "scan"),
        buckets=_section(BucketRule, data.get("buckets", {}), "buckets"),
        weights=_section(WeightConfig, data.get("weights", {}), "weights"),
        shards=_section(ShardConfig, data.get("shards", {}), "shards"),
        extractors=_extractors(data["extractors"], base_dir) if "extractors" in data else DEFAULT_EXTRACTORS,
        scorers=_scorers(data["scorers"]) if "scorers" in data else (),
        scoring=_section(ScoringConfig, data.get("scoring", {}), "scoring"),
        materialize=_section(PoolConfig, data.get("materialize", {}), "materialize"),
        augment=_section(AugmentPolicy, data.get("augment", {}), "augment"),
        pair_quality=_section(PairQuality, data.get("pair_quality", {}), "pair_quality"),
        filters=_section(FilterConfig, data.get("filters", {}), "filters"),
        metrics=_section(MetricThresholds, data.get("metrics", {}), "metrics"),
        quality=_section(QualityConfig, data.get("quality", {}), "quality"),
        dedup=_section(DedupConfig, data.get("dedup", {}), "dedup"),
        sources=_sources(data["sources"], base_dir) if "sources" in data else (),
        sidecars=_sidecars(data.get("sidecars", {}), base_dir),
    )
    _check(cfg)
    return cfg


def _check(cfg: BuildConfig) -> None:
    try:
        cfg.buckets.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if (
        cfg.scan.max_pixels <= 0
        or cfg.scan.max_bytes <= 0
        or cfg.scan.max_seconds < 0
        or cfg.scan.min_side < 1
        or cfg.scan.max_aspect < 1
        or cfg.scan.chunk_size < 0
    ):
        raise ConfigError(f"bad [scan] values: {cfg.scan}")
    try:
        cfg.weights.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for name, pool in (("materialize", cfg.materialize), ("scoring", cfg.scoring)):
        if pool.actors < 0 or not 0 < pool.gpu_share <= 1:
            raise ConfigError(f"bad [{name}] values: {pool}; need actors >= 0, 0 < gpu_share <= 1")
    if cfg.shards.samples_per_shard < 1:
        raise ConfigError("shards.samples_per_shard must be >= 1")
    if cfg.shards.image_format not in ("jpg", "webp"):
        raise ConfigError(f"shards.image_format must be 'jpg' or 'webp', got {cfg.shards.image_format!r}")
    check_ranges(cfg)  # after the checks above, whose messages say more about the usual mistakes


def read_toml(path: str) -> dict[str, Any]:
    """A config file's tables; a missing or malformed file is a one-line ConfigError."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None


def config_from_record(data: dict[str, Any]) -> BuildConfig:
    """``BuildConfig.to_dict`` read back (what build.json records as ``request.config``): the
    scorers are recorded as a list of specs, the TOML spells them as ``[scorers.NAME]`` tables."""
    data = dict(data)
    if isinstance(data.get("scorers"), list):
        data["scorers"] = {
            s["name"]: {**s.get("options", {}), **({"weights": s["weights"]} if s.get("weights") else {})}
            for s in data["scorers"]
        }
    return config_from_dict(data)


def load_config(path: str | None) -> BuildConfig:
    if path is None:
        return BuildConfig()
    return config_from_dict(read_toml(path), os.path.dirname(os.path.abspath(path)))
