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
from groundwork.configtable import diff_dicts
from sharding.integrity import ACTIVE, FILES, commit, committed, file_record, weight_file
from sharding.layout import DATASET_CARD, MANIFEST, DamagedFileError, Layout
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

from ..columnar import bucket_labels, labels, ranks
from ..config import config_from_dict, read_toml

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


def solve_columns(policies: dict[str, dict[str, Any]], given: WeightConfig | None = None) -> list[str]:
    """Every manifest column one of these recorded versions (or ``given``) is solved from: what an
    append reads of the manifest to check and re-solve them all."""
    cols = manifest_inputs(given) if given is not None else []
    for meta in policies.values():
        try:
            cols += manifest_inputs(policy_of(meta))
        except (ValueError, KeyError):
            continue  # an unreadable policy is named where it is re-solved (resolve_all)
    return list(dict.fromkeys(cols))


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
    from groundwork.configtable import from_table

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


def next_name(taken: list[str]) -> str:
    n = 1
    while f"v{n}" in taken:
        n += 1
    return f"v{n}"


def recorded_config(layout: Layout) -> dict[str, Any]:
    """The finished build's config (build.json ``request.config``); ReweightRefused if unfinished."""
    return finished_record(layout)["request"]["config"]


def weights_from_toml(path: str, recorded: dict[str, Any] | Layout) -> WeightConfig:
    """``[weights]`` of a TOML file; refuses a file whose other settings differ from the build's
    (``recorded``: its config, or OUT, whose config is read once the file itself is checked)."""
    data = read_toml(path)
    cfg = config_from_dict(data, os.path.dirname(os.path.abspath(path)))  # hostile numbers: refused here
    if isinstance(recorded, Layout):
        recorded = recorded_config(recorded)
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

    ``cfg`` None: the build's recorded ``[weights]``. The manifest is checked against build.json
    first (a version solved over a damaged manifest would be wrong). The new version and build.json
    are committed together (sharding/integrity.py): a reweight killed before build.json leaves a
    version that is not recorded, which the next reweight or build re-run removes.
    Raises ReweightRefused / WeightError / DamagedFileError.
    """
    start = time.perf_counter()
    layout = out if isinstance(out, Layout) else Layout(out)
    build = finished_record(layout)
    recorded = build["request"]["config"]
    files = build.get(FILES) or {}
    policies = policies_of(layout, build)
    if files:
        drop_unrecorded_versions(layout, policies)
    existing = sorted(policies)
    if name is not None:
        check_name(name)
    if cfg is None and name in existing:  # activate a stored version
        _, version, meta = read_version(layout, name)
        cfg = policy_of(meta)
        manifest = read_manifest(layout, ["key", "source", "bucket_w", "bucket_h"], files)
        if not version["key"].equals(manifest["key"]):
            raise ReweightRefused(f"weight version {name!r} does not match the manifest; solve it again")
    else:
        if name in existing:
            raise ReweightRefused(f"weight version {name!r} exists; choose another --name")
        if cfg is None:
            cfg = policy_of({"weights": recorded["weights"]})
        name = name or next_name(existing)
        manifest = read_manifest(layout, manifest_inputs(cfg), files)
        version = solve(manifest, cfg)
        store(layout, name, version, cfg)
        policies[name] = policy_meta(cfg)
    summary = summarize(manifest, version, cfg.training_samples)
    if activate_it:
        set_active(layout, name)
        build["weights"], build["weights_active"] = summary, name
    refresh_card(layout, build)
    if files:  # the commit records what this reweight wrote; every other record stays as it was
        files = dict(files)
        files[weight_file(name)] = {**file_record(layout, weight_file(name)), "policy": policies[name]}
        if activate_it:
            files[ACTIVE] = file_record(layout, ACTIVE)
        if DATASET_CARD in files and layout.exists(layout.dataset_card):
            files[DATASET_CARD] = file_record(layout, DATASET_CARD)
        build[FILES] = files
    commit(layout, build)
    is_active = active_name(layout) == name
    return ReweightResult(
        layout.out, name, is_active, manifest.num_rows, time.perf_counter() - start, summary
    )


def read_manifest(layout: Layout, columns: list[str], files: dict[str, Any]) -> pa.Table:
    """The manifest's ``columns``, the whole file's size and sha256 checked against build.json
    first (hashed as a stream: the manifest is never held whole, docs/scale.md)."""
    from sharding.integrity import file_faults

    if not layout.exists(layout.manifest):
        raise DamagedFileError(layout.display(layout.manifest), "missing")
    wrong = file_faults(layout, {MANIFEST: files[MANIFEST]}) if MANIFEST in files else {}
    if wrong:
        raise DamagedFileError(layout.display(layout.manifest), wrong[MANIFEST])
    return layout.read_parquet(layout.manifest, columns=columns)


def refresh_card(layout: Layout, build: dict[str, Any]) -> None:
    """Rewrite OUT's HF card for the build as it stands (``build``: its committed build.json; a build
    of an older contract gets its fingerprint too); its bytes change only when the shards did, so
    HF's cache stays valid."""
    from ..build.card import write_dataset_card

    if not layout.exists(layout.shards_json):  # a manifest-only OUT (the reweight and scale benches)
        return
    write_dataset_card(layout, build["request"]["config"], int(build.get("contract", 0)))


def finished_record(layout: Layout) -> dict[str, Any]:
    """The committed build.json (or its copy when build.json is damaged); ReweightRefused if unfinished."""
    build, _ = committed(layout)
    if build is None:
        raise ReweightRefused(f"{layout.out} is not a finished build (no complete build.json)")
    return build


def policies_of(layout: Layout, build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Version name -> the policy it was solved with (``{"weights": {...}}``): build.json's record,
    or for a build from before the records, each version file's own metadata."""
    files = build.get(FILES)
    if files:
        prefix = weight_file("")[: -len(".parquet")]
        return {
            rel[len(prefix) : -len(".parquet")]: entry["policy"]
            for rel, entry in files.items()
            if rel.startswith(prefix) and isinstance(entry.get("policy"), dict)
        }
    found = {}
    for name in list_versions(layout):
        try:
            found[name] = read_version(layout, name)[2]
        except (WeightsVersionError, ValueError):
            continue
    return found


def drop_unrecorded_versions(layout: Layout, policies: dict[str, Any]) -> list[str]:
    """Remove weight files build.json does not record (a reweight killed before its commit);
    returns their names."""
    gone = [n for n in list_versions(layout) if n not in policies]
    for name in gone:
        layout.remove(layout.weights_version(name))
    return gone


def stored_policies(layout: Layout) -> dict[str, WeightConfig]:
    """Version name -> its policy, for every recorded version of OUT."""
    build, _ = committed(layout)
    found = {}
    for name, meta in policies_of(layout, build or {}).items():
        try:
            found[name] = policy_of(meta)
        except (ValueError, KeyError):
            continue
    return found


def resolve_all(
    layout: Layout, manifest: pa.Table, policies: dict[str, dict[str, Any]], active: str | None,
    given: WeightConfig | None = None,
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:  # fmt: skip
    """Re-solve every version of ``policies`` over ``manifest`` (after an append), each with its own
    policy; with ``given`` (the command's ``[weights]``) not among them, also solve that one as a
    new version (not active), so a changed ``[weights]`` is never dropped without a word.

    Returns (version -> "ok", "new: ..." or why it was removed, the policies kept). A version whose
    policy no longer applies (shares without the new source) is removed; the active one must solve
    (WeightError otherwise).
    """
    report: dict[str, str] = {}
    kept: dict[str, dict[str, Any]] = {}
    for name, meta in sorted(policies.items()):
        try:
            cfg = policy_of(meta)
            store(layout, name, solve(manifest, cfg), cfg)
            report[name], kept[name] = "ok", meta
        except (WeightError, ValueError, KeyError) as exc:
            if name == active:
                raise WeightError(f"active weight version {name!r}: {exc}") from None
            if layout.exists(layout.weights_version(name)):
                layout.remove(layout.weights_version(name))
            report[name] = f"removed: {exc}"
    if given is not None and policy_meta(given) not in kept.values():
        name = next_name(list(policies))
        store(layout, name, solve(manifest, given), given)
        kept[name] = policy_meta(given)
        report[name] = (
            f"new: the [weights] given with this command, solved over the union (not active: "
            f"`linepairs reweight {layout.out} --name {name} --activate` makes it the default)"
        )
    return report, kept


def resolve_faults(layout: Layout) -> list[str]:
    """Each recorded weight version solved again from its recorded policy and compared with the
    stored weights (``linepairs verify``): a version rewritten to other weights is named even when
    its record was rewritten too."""
    build, _ = committed(layout)
    if build is None:
        return []
    faults = []
    for name, meta in sorted(policies_of(layout, build).items()):
        try:
            cfg = policy_of(meta)
            _, stored, _ = read_version(layout, name)
            manifest = layout.read_parquet(layout.manifest, columns=manifest_inputs(cfg))
            again = solve(manifest, cfg)
        except (WeightError, WeightsVersionError, DamagedFileError, ValueError, KeyError) as exc:
            faults.append(f"{weight_file(name)}: cannot be solved again from its policy ({exc})")
            continue
        a = stored["weight"].to_numpy(zero_copy_only=False)
        b = again["weight"].to_numpy(zero_copy_only=False)
        if len(a) != len(b) or not np.allclose(a, b, rtol=1e-9, atol=0, equal_nan=False):
            faults.append(
                f"{weight_file(name)}: its weights are not what its recorded policy gives (solved again: "
                f"max |difference| {float(np.max(np.abs(a - b))) if len(a) == len(b) and len(a) else 'n/a'})"
            )
        elif stored["tier"].to_pylist() != again["tier"].to_pylist():
            faults.append(f"{weight_file(name)}: its tiers are not what its recorded policy gives")
    return faults


__all__ = [
    "ReweightRefused",
    "ReweightResult",
    "manifest_inputs",
    "pixel_change_message",
    "policies_of",
    "resolve_all",
    "resolve_faults",
    "reweight",
    "solve",
    "summarize",
    "weights_from_toml",
    "write_first_version",
]
