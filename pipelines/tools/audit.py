"""``linepairs audit``: what a build holds and what the loader actually draws from it.

Intended shares come from the manifest weights (``curation.weighting.shares``); realised shares
from N draws through ``sharding.loader`` itself (keys only, nothing decoded), so the audit
checks the very code the trainer uses.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.weighting import effective_sample_size
from pipelines.columnar import parquet_batches
from sharding.integrity import check_size, committed, read_shards, recorded_files
from sharding.layout import MANIFEST, DamagedFileError, Layout
from sharding.loader import REPAIR_HINT, BatchStream, LoaderError, open_layout, shard_problems
from sharding.weights import WeightsVersionError, read_version

from ..columnar import bucket_labels

DIMENSIONS = ("source", "tier", "bucket")


def _labels(stream: BatchStream) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per dimension: (code per sample, names)."""
    pop = stream.pop
    return {
        "source": (pop.sources, pop.source_names),
        "tier": (pop.tiers, pop.tier_names),
        "bucket": (pop.bucket_of, [f"{w}x{h}" for w, h in pop.buckets]),
    }


def _shares_of(mass: np.ndarray, codes: np.ndarray, names: list[str]) -> dict[str, float]:
    by_code = np.bincount(codes, weights=mass, minlength=len(names))
    total = by_code.sum()
    return {
        name: float(by_code[i] / total) if total else 0.0
        for i, name in sorted(enumerate(names), key=lambda x: x[1])
    }


def _counts_of(codes: np.ndarray, names: list[str]) -> dict[str, int]:
    by_code = np.bincount(codes, minlength=len(names))
    return {name: int(by_code[i]) for i, name in sorted(enumerate(names), key=lambda x: x[1])}


def realised_draws(stream: BatchStream, draws: int) -> dict[str, Any]:
    """Draw ``draws`` samples through the loader: draws per sample, batches, bucket-pure batches."""
    pop = stream.pop
    counts = np.zeros(len(pop), np.int64)
    batches = pure = drawn = 0
    first: list[int] = []  # rows in draw order, for contact sheets
    for _, bucket, rows in stream.index_batches(start=0):
        take = rows[: draws - drawn]
        np.add.at(counts, take, 1)
        batches += 1
        pure += bool(np.all(pop.bucket_of[rows] == bucket))
        if len(first) < 4096:
            first.extend(take[: 4096 - len(first)].tolist())
        drawn += len(take)
        if drawn >= draws:
            break
    return {"counts": counts, "draws": drawn, "batches": batches, "pure": pure, "first_rows": first}


def _tag_table(layout: Layout, pop, top: int) -> dict[str, list]:
    """Top tags by number of samples and by share of the weight (tag mass), in Arrow: the manifest is
    read one row group at a time and each group's tags are summed before the next is read."""
    total = pop.weights.sum()
    partial = []
    skipped = pa.array(sorted(pop.skipped), pa.string())
    before = 0  # population rows before this row group
    # The population is the manifest in order minus the rows of skipped shards, so a manifest row's
    # population row is a running count (a key lookup per row group would rebuild a hash table of
    # every key each time: quadratic, 12+ CPU minutes at 10M samples).
    for batch in parquet_batches(layout, layout.manifest, columns=["shard", "tags"]):
        keep = ~pc.is_in(batch["shard"], value_set=skipped).to_numpy(zero_copy_only=False)
        row = before + np.cumsum(keep) - 1
        before += int(keep.sum())
        weight = np.zeros(batch.num_rows)
        weight[keep] = pop.weights[row[keep]] / total
        tags = batch["tags"].combine_chunks()
        parents = pc.list_parent_indices(tags).to_numpy()
        flat = pa.table(
            {"tag": pc.list_flatten(tags), "mass": weight[parents], "one": keep[parents].astype(np.int64)}
        )
        partial.append(flat.group_by("tag").aggregate([("mass", "sum"), ("one", "sum")]))
    if before != len(pop):
        raise RuntimeError(f"manifest rows in play {before} != population {len(pop)}: the manifest changed")
    if not partial:
        return {"by_count": [], "by_weight": []}
    grouped = pa.concat_tables(partial).group_by("tag").aggregate([("mass_sum", "sum"), ("one_sum", "sum")])
    grouped = grouped.rename_columns(["tag", "mass", "count"]).filter(pc.greater(pc.field("count"), 0))
    n = len(pop)

    def top_by(column: str) -> list[dict]:
        order = pc.sort_indices(grouped, sort_keys=[(column, "descending"), ("tag", "ascending")])
        return grouped.take(order[:top]).to_pylist()

    return {
        "by_count": [[g["tag"], g["count"], round(g["count"] / n, 6)] for g in top_by("count")],
        "by_weight": [[g["tag"], g["count"], round(g["mass"], 6)] for g in top_by("mass")],
    }


def _uncategorised(layout: Layout) -> dict[str, int]:
    """Tags filed as general for lack of a category (folder captions, flat tag lists with no tag
    table entry): how many, in how many samples, of all the manifest's tags (a row group at a time)."""
    import pyarrow.parquet as pq

    out = {"tags": 0, "samples": 0, "of_tags": 0}
    with layout.open_input_file(layout.manifest) as fh:
        f = pq.ParquetFile(fh)
        columns = [
            c for c in ("uncategorised_tags", "tags") if c in f.schema_arrow.names
        ]  # older builds lack one
        for i in range(f.num_row_groups):
            batch = f.read_row_group(i, columns=columns)
            out["of_tags"] += int(pc.sum(pc.list_value_length(batch["tags"])).as_py() or 0)
            if "uncategorised_tags" in columns:
                counts = np.nan_to_num(
                    batch["uncategorised_tags"].to_numpy(zero_copy_only=False).astype(np.float64)
                )
                out["tags"] += int(counts.sum())
                out["samples"] += int((counts > 0).sum())
    return out


def _rejects(layout: Layout) -> dict[str, int]:
    try:
        table = layout.read_parquet(layout.rejects, columns=["reason"])
    except FileNotFoundError:  # a damaged table is an error (audit); an unreachable store too
        return {}
    counts = [(c["values"], c["counts"]) for c in pc.value_counts(table["reason"]).to_pylist()]
    return dict(sorted(counts, key=lambda rc: -rc[1]))  # stable: ties in order of first appearance


def audit(
    out: Layout | str, *, draws: int = 200_000, batch_size: int = 64, seed: int = 0, top_tags: int = 20,
    weights: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The audit report as a JSON-serialisable dict (``realised`` comes from the loader).

    ``weights``: the weight version to audit (None: the active one). A damaged table of OUT is a
    LoaderError naming it, as in the loader.
    """
    try:
        return _audit(out, draws=draws, batch_size=batch_size, seed=seed, top_tags=top_tags, weights=weights)
    except DamagedFileError as exc:
        raise LoaderError(f"{exc}: {REPAIR_HINT}") from None


def _audit(
    out: Layout | str, *, draws: int, batch_size: int, seed: int, top_tags: int, weights: str | None
) -> dict[str, Any]:
    layout = open_layout(out)
    with warnings.catch_warnings():  # bad shards are reported below, as part of the audit
        warnings.simplefilter("ignore")
        stream = BatchStream(
            layout, batch_size, seed=seed, keys_only=True, skip_bad_shards=True, weights=weights
        )
    shards = read_shards(layout)
    problems = shard_problems(layout, shards)
    pop = stream.pop
    w = pop.weights
    drawn = realised_draws(stream, draws)
    labels = _labels(stream)
    intended = {d: _shares_of(w, *labels[d]) for d in DIMENSIONS}
    realised = {d: _shares_of(drawn["counts"].astype(np.float64), *labels[d]) for d in DIMENSIONS}
    error = {d: max(abs(realised[d][k] - intended[d][k]) for k in intended[d]) for d in DIMENSIONS}
    counts = {d: _counts_of(*labels[d]) for d in DIMENSIONS}
    hist_counts, hist_edges = (
        np.histogram(np.log10(w[w > 0]), bins=30) if np.any(w > 0) else (np.zeros(0), np.zeros(1))
    )
    build, _ = committed(layout)  # build.json, or its committed copy when build.json is damaged
    first = list(dict.fromkeys(drawn["first_rows"]))
    return {
        "out": layout.out,
        "weights_version": pop.weights_name,
        "samples": len(pop),
        "shards": len(shards),
        "shard_problems": problems,
        "counts": counts,
        "effective_sample_size": round(effective_sample_size(w), 3),
        "weight": {
            "min": float(w.min()),
            "median": float(np.median(w)),
            "max": float(w.max()),
            "mean": float(w.mean()),
            "log10_histogram": {"edges": hist_edges.tolist(), "counts": hist_counts.tolist()},
        },  # fmt: skip
        "seed": seed,
        "batch_size": batch_size,
        "draws": drawn["draws"],
        "batches": drawn["batches"],
        "bucket_purity": drawn["pure"] / drawn["batches"] if drawn["batches"] else 1.0,
        "samples_drawn_at_least_once": float(np.mean(drawn["counts"] > 0)),
        "intended": intended,
        "realised": realised,
        "max_abs_error": error,
        "tags": _tag_table(layout, pop, top_tags),
        "uncategorised_tags": _uncategorised(layout),
        "rejects_by_reason": _rejects(layout),
        "intended_by_build": (build or {}).get("weights", {}).get("intended_share"),
        # distinct, in draw order: the contact sheet's samples
        "_first_keys": pop.keys.take(pa.array(first, pa.int64())).to_pylist(),
        # their weight and tier (shards hold neither): key -> [weight, tier]
        "_first_weights": {pop.key(r): [float(pop.weights[r]), pop.tier_names[pop.tiers[r]]] for r in first},
    }


def pair_samples(
    out: Layout | str, keys: list[str], weights: dict[str, list[Any]] | None = None
) -> list[dict[str, Any]]:
    """Whole samples (illustration and every line drawing) for the contact sheet; unreadable ones are
    left out. ``weights``: key -> [weight, tier] (the report's ``_first_weights``), added to each meta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = BatchStream(out, 1, keys_only=True, skip_bad_shards=True)
    found = []
    for row in stream.rows_of(keys):  # one key lookup for all (each hashes the population's keys)
        if row is None:
            continue
        try:
            found.append(stream.sample_at(row))
        except (LoaderError, ValueError):  # a corrupt member: the audit names bad shards elsewhere
            continue
    for s in found:
        if weights and s["key"] in weights:
            s["meta"] = {**s["meta"], "weight": weights[s["key"]][0], "tier": weights[s["key"]][1]}
    return found


def public(report: dict[str, Any]) -> dict[str, Any]:
    """The report without private working fields (what ``--json`` prints)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def summary_lines(report: dict[str, Any]) -> list[str]:
    def pct(d: dict[str, float], k: str) -> str:
        return f"{d.get(k, 0.0):6.1%}"

    lines = [
        f"build        {report['out']} (weights {report.get('weights_version') or '?'})",
        f"samples      {report['samples']} in {report['shards']} shards; "
        f"effective sample size {report['effective_sample_size']:.0f}",
        f"weights      min {report['weight']['min']:.3g}  median {report['weight']['median']:.3g}  "
        f"max {report['weight']['max']:.3g}",
        f"draws        {report['draws']} in {report['batches']} batches of {report['batch_size']} (seed {report['seed']}); "
        f"bucket purity {report['bucket_purity']:.0%}; {report['samples_drawn_at_least_once']:.0%} of samples drawn",
    ]
    for dim in DIMENSIONS:
        lines.append(f"{dim:<12} {'samples':>8} {'intended':>9} {'realised':>9}")
        for name in report["intended"][dim]:
            lines.append(
                f"  {name:<10} {report['counts'][dim].get(name, 0):>8} "
                f"{pct(report['intended'][dim], name):>9} {pct(report['realised'][dim], name):>9}"
            )
        lines.append(f"  max |realised - intended| = {report['max_abs_error'][dim]:.2%}")
    tags = report["tags"]
    if tags["by_count"]:
        lines.append("top tags     by count                         by weight")
        for i in range(max(len(tags["by_count"]), len(tags["by_weight"]))):
            left = tags["by_count"][i] if i < len(tags["by_count"]) else None
            right = tags["by_weight"][i] if i < len(tags["by_weight"]) else None
            lines.append(
                f"  {(f'{left[0][:28]} ({left[1]})' if left else ''):<40} "
                f"{(f'{right[0][:28]} ({right[2]:.1%})' if right else '')}"
            )
    lines.append(uncategorised_line(report))
    if report["rejects_by_reason"]:
        lines.append("rejects      " + ", ".join(f"{r} {n}" for r, n in report["rejects_by_reason"].items()))
    for shard, why in sorted(report["shard_problems"].items()):
        lines.append(f"BAD SHARD    {shard}: {why} (left out of the draws)")
    return lines


def uncategorised_line(report: dict[str, Any]) -> str:
    u = report.get("uncategorised_tags") or {"tags": 0, "samples": 0, "of_tags": 0}
    if not u["tags"]:
        return f"categories   every tag has its category ({u['of_tags']} tags)"
    return (
        f"categories   {u['tags']} of {u['of_tags']} tags had no category (filed as general) in "
        f"{u['samples']} samples; a [sidecars] tag_table gives them theirs"
    )


# ---------------------------------------------------------------- compare two weight versions


def compare(out: Layout | str, a: str, b: str, *, top_tags: int = 20) -> dict[str, Any]:
    """Intended shares of draws per source, tier, bucket and top tags under versions ``a`` and ``b``.

    Intended only (from the manifest and the two weight files): nothing is drawn or decoded.
    """
    layout = open_layout(out)
    out = layout.out
    try:
        check_size(layout, MANIFEST, recorded_files(layout))
        table = layout.read_parquet(
            layout.manifest, columns=["key", "source", "bucket_w", "bucket_h", "tags"]
        )
    except FileNotFoundError as exc:
        raise LoaderError(f"{out} is not a finished build (no manifest.parquet): {exc}") from None
    except DamagedFileError as exc:
        raise LoaderError(f"{exc}: {REPAIR_HINT}") from None
    buckets = bucket_labels(table)
    tags = table["tags"].combine_chunks()
    parents = pc.list_parent_indices(tags).to_numpy()
    flat_tags = pc.list_flatten(tags)
    versions, shares, tag_mass = {}, {}, {}
    for name in (a, b):
        try:
            _, version, meta = read_version(layout, name, keys=table["key"])
        except WeightsVersionError as exc:
            raise LoaderError(str(exc)) from None
        w = version["weight"].to_numpy(zero_copy_only=False).astype(np.float64)
        versions[name] = {
            "effective_sample_size": round(effective_sample_size(w), 3),
            "weight": {"min": float(w.min()), "max": float(w.max())} if len(w) else {},
            "policy": meta.get("weights"),
        }
        by = {"source": table["source"], "tier": version["tier"], "bucket": buckets}
        shares[name] = {
            d: _shares_of(w, *_codes_and_names(col)) for d, col in by.items()
        }  # fmt: skip
        mass = pa.table({"tag": flat_tags, "mass": (w / w.sum())[parents] if len(w) else []})
        grouped = mass.group_by("tag").aggregate([("mass", "sum")]).to_pylist()
        tag_mass[name] = {g["tag"]: g["mass_sum"] for g in grouped}
    dims = {}
    for d in DIMENSIONS:
        labels = sorted(set(shares[a][d]) | set(shares[b][d]))
        dims[d] = [[k, shares[a][d].get(k, 0.0), shares[b][d].get(k, 0.0)] for k in labels]
    top = sorted(
        set(tag_mass[a]) | set(tag_mass[b]),
        key=lambda t: (-max(tag_mass[a].get(t, 0.0), tag_mass[b].get(t, 0.0)), t),
    )[:top_tags]
    dims["tags"] = [[t, round(tag_mass[a].get(t, 0.0), 6), round(tag_mass[b].get(t, 0.0), 6)] for t in top]
    return {"out": out, "a": a, "b": b, "samples": table.num_rows, "versions": versions, "shares": dims}


def _codes_and_names(column) -> tuple[np.ndarray, list[str]]:
    encoded = pa.chunked_array(column).combine_chunks().dictionary_encode()
    names = [str(x) for x in encoded.dictionary.to_pylist()]
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), names


def compare_lines(report: dict[str, Any]) -> list[str]:
    a, b = report["a"], report["b"]
    va, vb = report["versions"][a], report["versions"][b]
    lines = [
        f"build        {report['out']}: {report['samples']} samples; intended share of draws",
        f"effective    {a} {va['effective_sample_size']:.0f}   {b} {vb['effective_sample_size']:.0f}",
    ]
    for dim in (*DIMENSIONS, "tags"):
        lines.append(f"{dim:<30} {a[:9]:>9} {b[:9]:>9} {'change':>8}")
        for name, x, y in report["shares"][dim]:
            lines.append(f"  {str(name)[:28]:<28} {x:>9.1%} {y:>9.1%} {y - x:>+8.1%}")
    return lines


__all__ = ["audit", "compare", "compare_lines", "pair_samples", "public", "realised_draws", "summary_lines"]
