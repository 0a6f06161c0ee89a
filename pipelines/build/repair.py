"""A finished build checked against its last commit and repaired from the rest of OUT.

On every re-run of the build command (and before every ``--append`` / ``--retry``), OUT is
compared with what its last commit recorded (sharding/integrity.py): every table and weight
version by size and sha256, ``shards.json`` against the shards' state markers, every shard by size
and sha256. Whatever disagrees is rebuilt from what agrees, and must come out byte-identical to
the record, or nothing is written and the command stops with one line naming the file:

| damaged | rebuilt from |
|---|---|
| a shard (or its state marker) | its plan rows (the build's plan or the increment's), re-materialized |
| shards.json | the state markers of every committed shard |
| manifest, rejects, rejects_history | the plan, the state markers and each increment's own files, replayed commit by commit |
| a weight version | the manifest and the policy recorded for it |
| weights/active.json, README.md | build.json |
| plan.parquet | the scan parts, planned again |
| build.json | its committed copy ``_state/build.json`` (and the other way round) |

A repair never goes back before the last commit: an append's rows, shards and record stay.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Iterator
from typing import Any

from groundwork import contract
from sharding.integrity import (
    ACTIVE,
    FILES,
    digest,
    fault_of,
    file_faults,
    read_shards,
    weight_file,
)
from sharding.layout import (
    DamagedFileError,
    Layout,
    json_bytes,
)

from .base import Base, Finished, Increment, IntegrityError, finished_build
from .card import dataset_card_bytes
from .enumerate import enumerated_work
from .finalize import EMPTY_TABLES, Step, build_step, increment_step, write_tables
from .materialize import write_shards
from .plan import PlanReader, PlanSettings, write_plan
from .request import FRESH, BuildSummary
from .scan import scan

THREADS = 4  # state markers read at once (small reads: a store's latency is the limit)


def _say(msg: str) -> None:
    print(f"linepairs: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the shards


def committed_shards(layout: Layout, record: dict[str, Any]) -> dict[str, str]:
    """Every shard of the last commit -> the plan file that lists its rows."""

    plan_of = {shard: layout.plan for shard in PlanReader(layout, layout.plan).spans}
    for rec in record.get("appends", []):
        plan = Increment(layout, rec["number"]).plan
        plan_of.update({shard: plan for shard in rec.get("shards", [])})
    return plan_of


def read_states(layout: Layout, shards: list[str]) -> dict[str, dict[str, Any] | None]:
    """The state marker of each shard (None: missing or unreadable)."""
    present = set(layout.listed_sizes(layout.shard_states_dir))

    def one(shard: str) -> dict[str, Any] | None:
        path = layout.shard_state(shard)
        if path not in present:
            return None
        try:
            state = layout.read_json(path)
        except DamagedFileError:
            return None
        ok = (
            isinstance(state, dict)
            and isinstance(state.get("stats"), dict)
            and isinstance(state.get("rejects"), list)
        )
        return state if ok else None

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        return dict(zip(shards, pool.map(one, shards), strict=True))


def repair_shards(
    req, layout: Layout, plan_of: dict[str, str], expected: dict[str, dict[str, Any]] | None,
    states: dict[str, dict[str, Any] | None],
) -> list[str]:  # fmt: skip
    """Rewrite every shard whose tar or state marker disagrees with ``expected`` (shards.json's
    entries; None when shards.json itself is damaged: then the markers are the record). Updates
    ``states``; returns what was repaired."""
    from ..shardcheck import damage

    redo: dict[str, str] = {}
    want: dict[str, dict[str, Any]] = {}
    for shard in plan_of:
        st = states.get(shard)
        if expected is not None:
            if shard not in expected:
                raise IntegrityError(
                    f"{layout.out}: shard {shard} of the plan is not in shards.json, which matches its "
                    "record: the plan and shards.json disagree"
                )
            want[shard] = expected[shard]
            if st is None or st["stats"] != expected[shard]:
                redo[shard] = "its state marker is missing or disagrees with shards.json"
        elif st is not None:
            want[shard] = st["stats"]
        else:
            redo[shard] = "no state marker (and shards.json is damaged)"
    for path, why in damage(layout, [want[s] for s in plan_of if s not in redo]).items():
        redo[path] = why
    if not redo:
        return []
    _say(
        f"{len(redo)} damaged shard(s), rewriting them: "
        + "; ".join(f"{s}: {w}" for s, w in sorted(redo.items())[:5])
    )
    from ..raycluster import ray_session

    by_plan: dict[str, list[str]] = {}
    for shard in sorted(redo):
        by_plan.setdefault(plan_of[shard], []).append(shard)
    written: dict[str, dict[str, Any]] = {}
    with ray_session(req.address):
        for plan_path, shards in by_plan.items():
            written.update(write_shards(req, layout, PlanReader(layout, plan_path), shards))
    wrong = [s for s, st in written.items() if s in want and st["stats"] != want[s]]
    if wrong:
        raise IntegrityError(
            f"rewrote {', '.join(wrong[:5])} from the plan but the bytes differ from shards.json's record: "
            "either their source files changed since the build (restore them and run the same command "
            "again) or shards.json and build.json were changed after the build (`linepairs verify` "
            "compares them with the shards' state markers)"
        )
    states.update(written)
    return [f"{s} ({redo[s]})" for s in sorted(redo)]


# ---------------------------------------------------------------- the tables


def _extractors(req) -> list[str]:
    return [e.name for e in req.config.extractors]


def replay_tables(
    req, layout: Layout, record: dict[str, Any], states: dict[str, dict[str, Any]]
) -> dict[str, bytes | None]:
    """The bytes of manifest.parquet, rejects.parquet and rejects_history.parquet (None: absent)
    that the commits of ``record`` wrote: the build's finalize, then every increment in order,
    each streamed from the tables the one before it left (scratch files in ``_state/repair/``)."""

    def scratch(name: str, step: int) -> str:
        return layout.path("_state", "repair", f"{step:06d}-{name}")

    def steps() -> Iterator[tuple[int, Step, dict[str, dict[str, Any]]]]:
        """The build onto the empty base, then every increment (each read when its turn comes)."""
        built = {s: states[s] for s, p in committed_shards(layout, record).items() if p == layout.plan}
        yield 0, build_step(layout, built), built
        for rec in record.get("appends", []):
            inc = Increment(layout, rec["number"])
            meta, enumerated = layout.read_json(inc.request), layout.read_json(inc.enumerated)
            inc_states = {s: states[s] for s in rec.get("shards", [])}
            yield rec["number"], increment_step(layout, inc, meta, enumerated, inc_states), inc_states

    before: dict[str, Any] = EMPTY_TABLES
    made: list[str] = []
    try:
        for number, step, step_states in steps():
            out = {k: scratch(name, number) for k, name in (
                ("manifest", contract.MANIFEST), ("rejects", contract.REJECTS), ("history", contract.REJECTS_HISTORY)
            )}  # fmt: skip
            made += list(out.values())
            tables = write_tables(layout, step, step_states, _extractors(req), before, out)
            history = out["history"] if layout.exists(out["history"]) else before["history"]
            before = {"manifest": out["manifest"], "rejects": out["rejects"], "history": history,
                      "shards": tables.shards}  # fmt: skip
        return {
            contract.MANIFEST: layout.read_bytes(before["manifest"]),
            contract.REJECTS: layout.read_bytes(before["rejects"]),
            contract.REJECTS_HISTORY: layout.read_bytes(before["history"]) if before["history"] else None,
        }
    finally:
        for path in made:
            if layout.exists(path):
                layout.remove(path)


def _put(layout: Layout, rel: str, data: bytes, files: dict[str, Any], how: str) -> None:
    """Write ``data`` at ``rel`` when it is what build.json recorded; IntegrityError otherwise."""
    entry = files.get(rel)
    if entry is not None and fault_of(entry, data) is not None:
        raise IntegrityError(
            f"{layout.display(layout.path(rel))} is damaged and rebuilding it from {how} does not give the "
            f"recorded bytes ({len(data)} bytes, sha256 {digest(data)[:12]}...; recorded {entry.get('bytes')} "
            f"bytes, {str(entry.get('sha256'))[:12]}...): OUT cannot repair it"
        )
    layout.write_bytes(layout.path(rel), data)


def replan(req, layout: Layout, record: dict[str, Any]) -> None:
    """plan.parquet (and the early rejects) planned again from the scan parts, with the settings the
    build planned with (build.json's request)."""
    from ..config import config_from_dict

    given = record["request"]["config"]
    cfg = config_from_dict(
        {k: given[k] for k in ("seed", "dedup", "weights", "buckets", "shards") if k in given}
    )
    work = enumerated_work(layout)
    chunks = work["chunks"]
    if any(not layout.exists(layout.scan_part(c)) for c in range(chunks)):  # scanned again first
        from ..raycluster import ray_session

        with ray_session(req.address):
            scan(req, layout, Base(FRESH), work)
    settings = PlanSettings(cfg.dedup, cfg.weights, cfg.buckets, cfg.shards.samples_per_shard, cfg.seed)
    plan_file = layout.plan
    if layout.exists(plan_file):
        layout.remove(plan_file)
    write_plan(layout, chunks, settings)


def repair_weights(req, layout: Layout, record: dict[str, Any], damaged: dict[str, str]) -> list[str]:
    """Weight versions solved again from the manifest and their recorded policy; the active marker
    and the card from build.json."""
    from sharding.weights import encode_version

    from ..tools.reweight import manifest_inputs, policy_meta, policy_of, solve

    files = record[FILES]
    done = []
    for rel in sorted(damaged):
        entry = files[rel]
        if "policy" in entry:
            cfg = policy_of(entry["policy"])
            version = solve(layout.read_parquet(layout.manifest, columns=manifest_inputs(cfg)), cfg)
            _put(layout, rel, encode_version(version, policy_meta(cfg)), files, "the manifest and its policy")
        elif rel == ACTIVE:
            _put(layout, rel, json_bytes({"name": record["weights_active"]}), files, "build.json")
        elif rel == contract.DATASET_CARD:  # its config from build.json, its fingerprint from shards.json
            card = dataset_card_bytes(layout, record["request"]["config"], int(record.get("contract", 0)))
            _put(layout, rel, card, files, "the build's config and shards.json")
        else:
            continue
        done.append(f"{rel} ({damaged[rel]})")
    return done


# ---------------------------------------------------------------- the whole repair


def repair_finished(req, layout: Layout, finished: Finished) -> Any:
    """Check a finished OUT against its last commit and repair what disagrees (module doc); returns
    the build's summary (``repaired`` lists what was rebuilt, empty when nothing was)."""

    record = finished.record
    try:
        repaired = repair(req, layout, finished)
    except DamagedFileError as exc:  # a file the repair needs is damaged too
        unit = any(part in exc.path.split("/") for part in ("_state", "scan"))
        hint = "; delete it and run the same command again: it is made again" if unit else ""
        raise IntegrityError(f"cannot repair {layout.out}: {exc}{hint}") from None
    except FileNotFoundError as exc:  # ... or missing (a scan part is scanned again, a records part is not)
        raise IntegrityError(f"cannot repair {layout.out}: {exc.filename or exc} is missing too") from None
    return BuildSummary(
        req.out, record["counts"], record.get("timings", {}), already_complete=True,
        weights=record.get("weights"), repaired=repaired,
    )  # fmt: skip


def repair(req, layout: Layout, finished: Finished) -> list[str]:
    """The repair proper; returns one line per rebuilt file."""
    from ..tools.reweight import drop_unrecorded_versions, policies_of

    record = finished.record
    files: dict[str, Any] = record.get(FILES) or {}
    repaired: list[str] = []
    if not layout.exists(layout.request) or _unreadable_json(layout, layout.request) != record["request"]:
        layout.write_json(layout.request, record["request"])  # private: the request the commit recorded
    found = file_faults(layout, files) if files else {}
    if found:
        listed = "; ".join(f"{rel}: {why}" for rel, why in found.items())
        _say(f"{layout.out} does not match its last commit ({listed}); rebuilding from the rest of OUT")
    if files:
        for name in drop_unrecorded_versions(layout, policies_of(layout, record)):
            repaired.append(f"{weight_file(name)} removed (not recorded: left by a killed reweight)")
    if contract.PLAN in found:
        replan(req, layout, record)
        _put(layout, contract.PLAN, layout.read_bytes(layout.plan), files, "the scan parts")
        repaired.append(f"{contract.PLAN} ({found[contract.PLAN]})")
    plan_of = committed_shards(layout, record)
    states = read_states(layout, sorted(plan_of))
    expected = None
    if contract.SHARDS_JSON not in found:
        try:
            expected = {e["path"]: e for e in read_shards(layout)}
        except DamagedFileError as exc:  # a build from before the records: nothing else says so
            found[contract.SHARDS_JSON] = exc.why
    repaired += repair_shards(req, layout, plan_of, expected, states)
    if contract.SHARDS_JSON in found:
        stats = sorted((states[s]["stats"] for s in plan_of), key=lambda e: e["path"])
        _put(layout, contract.SHARDS_JSON, json_bytes({"shards": stats}), files, "the state markers")
        repaired.append(f"{contract.SHARDS_JSON} ({found[contract.SHARDS_JSON]})")
    tables = [t for t in (contract.MANIFEST, contract.REJECTS, contract.REJECTS_HISTORY) if t in found]
    if tables:
        full = {s: st for s, st in states.items() if st is not None}
        rebuilt = replay_tables(req, layout, record, full)
        for rel in tables:
            if rebuilt[rel] is None:
                raise IntegrityError(f"{layout.display(layout.path(rel))} is recorded but no commit wrote it")
            _put(layout, rel, rebuilt[rel], files, "the plan, the state markers and the increments")
            repaired.append(f"{rel} ({found[rel]})")
    repaired += repair_weights(
        req,
        layout,
        record,
        {
            r: w
            for r, w in found.items()
            if r in files and r not in (contract.PLAN, contract.SHARDS_JSON, *tables)
        },
    )
    for rel, why in sorted(finished.problems.items()):  # build.json and its copy, last: the commit marker
        target = layout.build_json if rel == contract.BUILD_JSON else layout.committed_copy
        layout.write_bytes(target, json_bytes(record))
        repaired.append(f"{rel} ({why})")
    if repaired:
        layout.remove_temp_files()  # leftovers of writers killed before the damage was found
        _say(f"repaired {layout.out}: " + "; ".join(repaired))
    return repaired


def _unreadable_json(layout: Layout, path: str) -> Any:
    try:
        return layout.read_json(path)
    except DamagedFileError:
        return None


__all__ = ["Finished", "IntegrityError", "finished_build", "repair_finished", "replay_tables"]
