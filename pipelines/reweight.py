"""Weight versions from the manifest alone: ``linepairs reweight`` and the build's first version.

Everything a weight depends on is a manifest column (source, key, quality score, tags, bucket),
so a version is solved without opening a shard: seconds per million samples. The policy is
``curation.weighting``; the storage is ``sharding.weights``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curation.weighting import WeightConfig, WeightError, compute_weights, high_tier_eligible, weight_summary
from sharding.layout import Layout
from sharding.weights import (
    FIRST_VERSION,
    WeightsVersionError,
    active_name,
    check_name,
    list_versions,
    read_version,
    set_active,
    write_version,
)

from .columnar import bucket_labels, labels, ranks
from .config import config_from_dict, diff_dicts, read_toml

# Config sections whose change is a change of weights only; every other one changes the shards.
WEIGHT_SECTIONS = ("weights",)


class ReweightRefused(Exception):
    """The request cannot be met by a reweight; the message says why and which command would."""


def manifest_inputs(cfg: WeightConfig) -> list[str]:
    """The manifest columns a version of policy ``cfg`` is solved from."""
    tags = [f"tags_{c}" for c in cfg.tag_categories] if cfg.tag_balance else []
    # bucket_upscale divides the quality; illustration and upscale gate the high tier (curation.md)
    return [
        "key", "source", "quality_score", "score", "bucket_w", "bucket_h", "bucket_upscale",
        "illustration", "upscale", *tags,
    ]  # fmt: skip


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A float column as numpy (NaN where null; all NaN when the table has no such column)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return table[name].to_numpy(zero_copy_only=False).astype(np.float64)


def solve(manifest: pa.Table, cfg: WeightConfig) -> pa.Table:
    """One row per manifest row (same order): key, weight, tier, quality and the factors.

    Raises ``WeightError`` when the policy cannot be met by these samples.
    """
    # The curation quality score when the scan has one, else the Danbooru score (NaN: unscored).
    quality_column = "quality_score" if "quality_score" in manifest.column_names else "score"
    quality = manifest[quality_column].to_numpy(zero_copy_only=False).astype(np.float64)
    if "bucket_upscale" in manifest.column_names:
        # An image enlarged to fill its bucket holds less detail than its size says (curation.md).
        quality = quality / np.maximum(1.0, manifest["bucket_upscale"].to_numpy(zero_copy_only=False))
    tags = None
    if cfg.tag_balance:
        columns = [manifest[f"tags_{c}"].to_pylist() for c in cfg.tag_categories]
        tags = [[t for part in row for t in (part or [])] for row in zip(*columns)]
    # Key ranks and shared source strings, not a Python string per sample: at 10M samples those
    # were ~1.4 GB and a lexsort of Python strings (the ranks sort exactly like the keys).
    w = compute_weights(
        cfg,
        sources=labels(manifest["source"]),
        keys=ranks(manifest["key"]),
        quality_scores=quality,
        tags=tags,
        eligible=high_tier_eligible(cfg, _floats(manifest, "illustration"), _floats(manifest, "upscale")),
    )
    return pa.table(
        {
            "key": manifest["key"],
            "weight": pa.array(w.weight, pa.float64()),
            "tier": pa.array(w.tier if len(w.tier) else [], pa.string()),  # shared "high"/"low"
            "quality": pa.array(w.quality, pa.float64(), from_pandas=True),  # NaN -> null
            "tier_weight": pa.array(w.tier_weight, pa.float64()),
            "tag_factor": pa.array(w.tag_factor, pa.float64()),
            "source_factor": pa.array(w.source_factor, pa.float64()),
        }
    )


def summarize(manifest: pa.Table, version: pa.Table, training_samples: int) -> dict[str, Any]:
    """build.json's ``weights``: intended shares, effective sample size, expected draws."""
    buckets = bucket_labels(manifest).to_numpy(zero_copy_only=False)
    return weight_summary(
        version["weight"].to_numpy(zero_copy_only=False),
        sources=labels(manifest["source"]),
        tiers=labels(version["tier"]),
        buckets=buckets,
        training_samples=training_samples,
    )


def policy_meta(cfg: WeightConfig) -> dict[str, Any]:
    """What a version file records about its policy (read back by ``policy_of``)."""
    return {"weights": json.loads(json.dumps(dataclasses.asdict(cfg)))}


def policy_of(meta: dict[str, Any]) -> WeightConfig:
    from curation.configtable import from_table

    return from_table(WeightConfig, meta["weights"], "weights")


def store(layout: Layout, name: str, version: pa.Table, cfg: WeightConfig) -> None:
    """Write version ``name`` of OUT (a complete file or none)."""
    write_version(layout, name, version, policy_meta(cfg))


def write_first_version(layout: Layout, manifest: pa.Table, cfg: WeightConfig) -> dict[str, Any]:
    """The build's version ``v1``, made active; returns its summary for build.json."""
    version = solve(manifest, cfg)
    store(layout, FIRST_VERSION, version, cfg)
    set_active(layout, FIRST_VERSION)
    return summarize(manifest, version, cfg.training_samples)


def next_name(layout: Layout) -> str:
    taken = set(list_versions(layout))
    n = 1
    while f"v{n}" in taken:
        n += 1
    return f"v{n}"


def recorded_config(layout: Layout) -> dict[str, Any]:
    """The finished build's config (build.json ``request.config``); ReweightRefused if unfinished."""
    build = layout.read_json(layout.build_json) if layout.exists(layout.build_json) else {}
    if not build.get("complete"):
        raise ReweightRefused(f"{layout.out} is not a finished build (no complete build.json)")
    return build["request"]["config"]


def weights_from_toml(path: str, recorded: dict[str, Any]) -> WeightConfig:
    """``[weights]`` of a TOML file; refuses a file whose other settings differ from the build's."""
    data = read_toml(path)
    cfg = config_from_dict(data, os.path.dirname(os.path.abspath(path)))
    given = cfg.to_dict()
    others = sorted(set(data) - set(WEIGHT_SECTIONS) - {"sources"})
    changes = [
        c for k in others for c in diff_dicts({k: recorded.get(k)}, {k: given.get(k)})
    ]  # only the sections the file states: a bare weights.toml changes nothing else
    if changes:
        raise ReweightRefused(pixel_change_message(changes))
    return cfg.weights


def pixel_change_message(changes: list[str]) -> str:
    shown = "; ".join(changes[:6]) + (" ..." if len(changes) > 6 else "")
    return (
        f"changed: {shown}. That changes the shards, not only the weights, so reweight cannot apply it: "
        "build into a new OUT (`linepairs build SOURCE... --out NEW_OUT --config FILE`). "
        "Only [weights] changes are applied to a finished build (`linepairs reweight OUT --config FILE`)."
    )


@dataclass
class ReweightResult:
    out: str
    name: str
    active: bool
    samples: int
    seconds: float
    summary: dict[str, Any]

    def lines(self) -> list[str]:
        share = self.summary.get("intended_share", {})
        fmt = lambda d: ", ".join(f"{k} {v:.1%}" for k, v in d.items())  # noqa: E731
        lines = [
            f"weights     {self.name} ({'active' if self.active else 'not active'}): "
            f"{self.samples} samples in {self.seconds:.2f} s; no shard opened",
        ]
        if share:
            lines.append(f"draws       by source: {fmt(share['source'])}; by tier: {fmt(share['tier'])}")
            lines.append(f"effective   sample size {self.summary['effective_sample_size']:.0f}")
        if not self.active:
            lines.append(f"next        linepairs reweight {self.out} --name {self.name} --activate")
        return lines


def reweight(
    out: str | Layout, cfg: WeightConfig | None = None, *, name: str | None = None, activate_it: bool = False
) -> ReweightResult:
    """Solve (or, with no ``cfg`` and an existing ``name``, just activate) a weight version of OUT.

    ``cfg`` None: the build's recorded ``[weights]``. Raises ReweightRefused / WeightError.
    """
    start = time.perf_counter()
    layout = out if isinstance(out, Layout) else Layout(out)
    recorded = recorded_config(layout)
    existing = list_versions(layout)
    if name is not None:
        check_name(name)
    if cfg is None and name in existing:  # activate a stored version
        _, version, meta = read_version(layout, name)
        cfg = policy_of(meta)
        manifest = layout.read_parquet(layout.manifest, columns=["key", "source", "bucket_w", "bucket_h"])
        if not version["key"].equals(manifest["key"]):
            raise ReweightRefused(f"weight version {name!r} does not match the manifest; solve it again")
    else:
        if name in existing:
            raise ReweightRefused(f"weight version {name!r} exists; choose another --name")
        if cfg is None:
            cfg = policy_of({"weights": recorded["weights"]})
        name = name or next_name(layout)
        manifest = layout.read_parquet(layout.manifest, columns=manifest_inputs(cfg))
        version = solve(manifest, cfg)
        store(layout, name, version, cfg)
    summary = summarize(manifest, version, cfg.training_samples)
    if activate_it:
        set_active(layout, name)
        _record_active(layout, name, summary)
    refresh_card(layout)
    is_active = active_name(layout) == name
    return ReweightResult(
        layout.out, name, is_active, manifest.num_rows, time.perf_counter() - start, summary
    )


def refresh_card(layout: Layout) -> None:
    """Rewrite OUT's HF card for the build as it stands (a build of an older contract gets its
    fingerprint too); its bytes change only when the shards did, so HF's cache stays valid."""
    from .finalize import write_dataset_card

    if not layout.exists(layout.shards_json):  # a manifest-only OUT (the reweight and scale benches)
        return
    build = layout.read_json(layout.build_json)
    write_dataset_card(layout, build["request"]["config"], int(build.get("contract", 0)))


def _record_active(layout: Layout, name: str, summary: dict[str, Any]) -> None:
    """build.json states the active version and its summary."""
    build = layout.read_json(layout.build_json)
    build["weights"], build["weights_active"] = summary, name
    layout.write_json(layout.build_json, build)


def stored_policies(layout: Layout) -> dict[str, WeightConfig]:
    """Version name -> its policy, for every stored version of OUT."""
    found = {}
    for name in list_versions(layout):
        try:
            found[name] = policy_of(read_version(layout, name)[2])
        except (WeightsVersionError, ValueError, KeyError):
            continue
    return found


def resolve_all(layout: Layout, manifest: pa.Table) -> dict[str, str]:
    """Re-solve every stored version over ``manifest`` (after an append), each with its own policy.

    Returns version -> "ok" or why it was removed (its policy no longer applies, e.g. shares
    without the new source). The active version must solve: WeightError otherwise.
    """
    active = active_name(layout)
    report = {}
    for name in list_versions(layout):
        try:
            _, _, meta = read_version(layout, name)
            cfg = policy_of(meta)
            store(layout, name, solve(manifest, cfg), cfg)
            report[name] = "ok"
        except (WeightError, WeightsVersionError, ValueError, KeyError) as exc:
            if name == active:
                raise WeightError(f"active weight version {name!r}: {exc}") from None
            layout.remove(layout.weights_version(name))
            report[name] = f"removed: {exc}"
    return report


__all__ = [
    "ReweightRefused",
    "ReweightResult",
    "manifest_inputs",
    "pixel_change_message",
    "resolve_all",
    "reweight",
    "solve",
    "summarize",
    "weights_from_toml",
    "write_first_version",
]
