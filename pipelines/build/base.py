"""The base a build grows from: nothing for a fresh build, the last commit for ``--append`` /
``--retry``. Its record (``finished_build``), the checks of a request against it (a changed request
refused, a source the weight policies give no share), the snapshot an increment takes when it starts
(hard links of the public tables) and the rollback of a refused increment."""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from typing import Any

from curation.sources import check_unique_names
from curation.weighting import WeightError, check_sources
from groundwork.configtable import diff_dicts
from sharding.integrity import check_build, committed, read_shards
from sharding.layout import (
    BUILD_JSON,
    MANIFEST,
    REJECTS,
    REJECTS_HISTORY,
    SHARDS_JSON,
    DamagedFileError,
    Layout,
)

from ..config import ConfigError
from .request import RETRY, RETRY_MAY_CHANGE, BuildRefused, BuildRequest, log

SNAPSHOT = (MANIFEST, REJECTS, SHARDS_JSON, BUILD_JSON, REJECTS_HISTORY)


# ---------------------------------------------------------------- where an increment keeps its state


class Increment:
    """Paths of increment ``number`` (``Layout.increment``; private to the build)."""

    def __init__(self, layout: Layout, number: int) -> None:
        self.layout, self.number = layout, number
        self.dir = layout.increment(number)

    def path(self, *parts: str) -> str:
        return self.layout.increment(self.number, *parts)

    @property
    def request(self) -> str:
        return self.path("request.json")

    @property
    def enumerated(self) -> str:
        return self.path("enumerated.json")

    @property
    def plan(self) -> str:
        return self.path("plan.parquet")

    @property
    def early_rejects(self) -> str:
        """Its scan, dedup and too-small reject rows (the plan writes them, as a build's ``_state/``)."""
        return self.path("early_rejects.parquet")

    def base(self, name: str) -> str:
        return self.path("base", name)

    def remove(self) -> None:
        for path in list(self.layout.files(self.dir)):
            self.layout.remove(path)
        if self.layout.local and os.path.isdir(self.dir):
            shutil.rmtree(self.dir)


@dataclass
class Base:
    """What a build grows from and what it selects: nothing and every input (a fresh build: an empty
    base, its state in ``_state/``), or a finished build's snapshot and its unseen inputs (``--append``)
    or its rejects of the given reasons (``--retry``), the increment's state in ``inc``. Every phase
    takes it; where the empty base's path differs (a fresh build's scan units may slice its records
    parts, its plan streams from the scan parts) that is a property of the base."""

    kind: str  # FRESH, APPEND or RETRY: the selection
    inc: Increment | None = None  # None: the empty base
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # the increment's request.json
    build: dict[str, Any] | None = None  # the base's committed build.json

    @property
    def empty(self) -> bool:
        return self.inc is None

    def describe(self, out: str, where: str, scanned: int) -> str:
        """The build's first log line."""
        if self.inc is None:
            return f"linepairs: building {out} on {where}"
        return f"linepairs: {self.kind} #{self.inc.number} to {out} on {where}: {scanned} inputs"

    def refused(self, layout: Layout) -> None:
        """Undo what a refused increment wrote (nothing to undo onto an empty base: a fresh build resumes)."""
        if self.inc is not None:
            rollback(layout, self.inc, self.meta["first_chunk"])


def take_snapshot(layout: Layout, inc: Increment) -> None:
    """The finished build's files as they were: hard links locally (they are replaced by rename,
    never written in place), copies on an object store."""
    for name in SNAPSHOT:
        src, dst = layout.path(name), inc.base(name)
        if not layout.exists(src) or layout.exists(dst):
            continue
        if layout.local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
                continue
            except OSError:  # a filesystem without hard links
                pass
        layout.write_bytes(dst, layout.read_bytes(src))


def _spec_without_share(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "share"}


def base_build(layout: Layout, kind: str) -> tuple[dict[str, Any], Any]:
    """(the committed build.json an increment starts from, its Finished record for the repair, or
    None when an increment is in flight: its finalize rewrites the public files from its snapshot).

    When build.json and its copy are both lost, the last increment's snapshot holds the build as it
    was before it: that increment is then resumed (finishing it commits a new build.json)."""

    record, problems = committed(layout)
    if record is None:
        last = last_increment(layout)
        if not last:
            raise BuildRefused(
                f"{layout.out} has no finished build to {kind} to; finish it first (the same command without --{kind})"
            )
        snapshot = Increment(layout, last).base(BUILD_JSON)
        record = check_build(layout.read_json(snapshot), layout.display(snapshot))
        return record, None
    in_flight = layout.exists(Increment(layout, len(record.get("appends", [])) + 1).request)
    return record, None if in_flight else Finished(record, problems)


def check_increment(req, layout: Layout, kind: str, build: dict[str, Any]) -> dict[str, Any]:
    """What this increment records as its request (``build``: the committed build.json); BuildRefused
    on a conflicting request."""

    base = build["request"]
    new = req.identity()
    may_change = {"weights", "sources", *(RETRY_MAY_CHANGE if kind == RETRY else ())}
    old_cfg = {k: v for k, v in base["config"].items() if k not in may_change}
    new_cfg = {k: v for k, v in new["config"].items() if k not in may_change}
    changes = diff_dicts(old_cfg, new_cfg)
    if changes or base["contract"] != new["contract"]:
        shown = "; ".join(changes[:6]) or f"contract {base['contract']} -> {new['contract']}"
        raise BuildRefused(
            f"--{kind} cannot change settings that decide the pixels of the existing shards ({shown}); "
            f"build into a new --out for that (`linepairs build SOURCE... --out NEW_OUT`)"
        )
    known = {s["name"]: s for s in base["sources"]}
    for rec in build.get("appends", []):
        known.update({s["name"]: s for s in rec.get("sources", [])})
    for spec in new["sources"]:
        old = known.get(spec["name"])
        if old is not None and _spec_without_share(old) != _spec_without_share(spec):
            raise BuildRefused(
                f"source {spec['name']!r} was {_spec_without_share(old)} in {req.out}, now "
                f"{_spec_without_share(spec)}; give a new source a new name"
            )
    return {
        "kind": kind,
        "reasons": list(req.retry),
        "sources": new["sources"],
        "config": new["config"],
        "config_changes": diff_dicts(base["config"], new["config"]),
    }


# ---------------------------------------------------------------- phases


def part_numbers(layout: Layout, folder: str) -> list[int]:
    names = (os.path.basename(p) for p in layout.files(folder))
    return sorted(
        int(n[5:11]) for n in names if n.startswith("part-") and n.endswith(".parquet") and ".tmp-" not in n
    )


def first_free_chunk(layout: Layout) -> int:
    """The first chunk number free in both records and scan parts: a build's scan units may slice
    its records parts (more scan parts than records parts); an increment's chunks are one of each."""
    used = part_numbers(layout, layout.records_dir) + part_numbers(layout, layout.scan_dir)
    return max(used) + 1 if used else 0


def records_parts(layout: Layout, below: int) -> list[int]:
    """The records parts numbered below ``below`` (numbers may skip: see ``first_free_chunk``)."""
    return [c for c in part_numbers(layout, layout.records_dir) if c < below]


def check_policy_sources(layout: Layout, build: dict[str, Any], req) -> None:
    """Before the first byte: the active weight version and the command's ``[weights]`` must give a
    share to every source when they give shares at all (a source without one cannot keep samples:
    ``curation.weighting``). ConfigError naming the source and the way out."""
    from ..tools.reweight import policies_of, policy_of

    known = [s["name"] for s in build["request"]["sources"]]
    for rec in build.get("appends", []):
        known += [s["name"] for s in rec.get("sources", [])]
    names = list(dict.fromkeys([*known, *(s.name for s in req.sources)]))
    active = build.get("weights_active")
    meta = policies_of(layout, build).get(active)
    checks = [("[weights] given with this command", req.config.weights)]
    if meta is not None:
        try:
            checks.insert(0, (f"the active weight version {active}", policy_of(meta)))
        except (ValueError, KeyError):
            pass  # an unreadable policy is the repair's to name
    for what, cfg in checks:
        try:
            check_sources(cfg, names)
        except WeightError as exc:
            raise ConfigError(f"{exc}; nothing was written") from None
        missing = [n for n in names if cfg.shares and n not in cfg.shares]
        if missing:
            raise ConfigError(
                f"source {missing[0]!r} has no share in [weights.shares] of {what} "
                f"({', '.join(f'{k}={v:g}' for k, v in cfg.shares.items())}), so its samples could not be "
                f"weighted; nothing was written. Give it a share (`{missing[0]}=PATH` ... with [weights.shares] "
                f"in --config), or first activate a version without shares (`linepairs reweight {layout.out} "
                "--config FILE --activate`)"
            )


def rollback(layout: Layout, inc: Increment, first_chunk: int) -> None:
    """Remove what a refused increment wrote (its records and scan parts, its own folder), so OUT
    is byte for byte as its last commit left it. Nothing public is written before the plan."""
    for folder, part in ((layout.records_dir, layout.records_part), (layout.scan_dir, layout.scan_part)):
        for c in part_numbers(layout, folder):
            if c >= first_chunk:
                layout.remove(part(c))
    inc.remove()
    parent = os.path.dirname(inc.dir)
    if layout.local and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


def snapshot_tables(layout: Layout, inc: Increment) -> dict[str, Any]:
    """The tables as they were when increment ``inc`` started (paths of its snapshot), checked against the
    snapshot's own record when it has one (a damaged snapshot is named, never finalized from)."""
    from sharding.integrity import FILES, file_faults

    base_build = layout.read_json(inc.base(BUILD_JSON))
    files = {rel: e for rel, e in (base_build.get(FILES) or {}).items() if rel in SNAPSHOT}
    damaged = file_faults(_SnapshotView(layout, inc), files)
    if damaged:
        listed = "; ".join(f"{rel}: {why}" for rel, why in damaged.items())
        raise IntegrityError(
            f"the snapshot of {layout.out} taken when increment #{inc.number} started is damaged ({listed}); "
            f"remove {layout.display(inc.dir)} and run the command again to start it afresh"
        )
    history = inc.base(REJECTS_HISTORY)
    return {  # the tables as paths: finalize streams them
        "build": base_build,
        "manifest": inc.base(MANIFEST),
        "rejects": inc.base(REJECTS),
        "history": history if layout.exists(history) else None,
        "shards": read_shards(layout, layout.read_bytes(inc.base(SHARDS_JSON))),
    }


class _SnapshotView:
    """A Layout-like view whose ``path(rel)`` is the snapshot copy of ``rel`` (for ``file_faults``)."""

    def __init__(self, layout: Layout, inc: Increment) -> None:
        self._layout, self._inc = layout, inc

    def path(self, rel: str) -> str:
        return self._inc.base(rel)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layout, name)


def merge_source_shares(req: BuildRequest) -> None:
    """``share`` on a source and ``[weights.shares]`` are two spellings of one fact: merge, refuse conflicts."""
    given = {s.name: s.share for s in req.sources if s.share is not None}
    if not given:
        return
    shares = dict(req.config.weights.shares)
    clash = sorted(n for n, v in given.items() if n in shares and shares[n] != v)
    if clash:
        raise ConfigError(
            f"source {clash[0]!r} has share {given[clash[0]]:g} on the source but "
            f"{shares[clash[0]]:g} in [weights.shares]; give it once"
        )
    weights = dataclasses.replace(req.config.weights, shares={**shares, **given})
    try:
        weights.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    req.config = dataclasses.replace(req.config, weights=weights)


# Config sections read by the enumeration and the scan; every other section is used from the plan on.
SCAN_SECTIONS = ("scan", "filters", "metrics", "quality", "scorers", "scoring", "sidecars")


def _scan_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "contract": identity["contract"],
        "config": {k: identity["config"].get(k) for k in SCAN_SECTIONS},
        "sources": [{k: v for k, v in s.items() if k != "share"} for s in identity["sources"]],
    }


def _plan_level_change(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when only settings used from the plan phase on differ."""
    return _scan_identity(old) == _scan_identity(new)


def check_request(req: BuildRequest, layout: Layout) -> Finished | None:
    """Refuse a changed request; return the last commit (pipelines/repair.py) when OUT is finished."""
    check_unique_names(req.sources)
    merge_source_shares(req)
    try:
        check_sources(req.config.weights, [s.name for s in req.sources])
    except WeightError as exc:
        raise ConfigError(str(exc)) from None
    identity = req.identity()
    finished = finished_build(layout)
    if finished is not None:
        old = finished.record["request"]
        if old != identity:
            refuse_changed_request(req, layout, old, identity)  # returns only for a stored weight policy
        return finished
    if layout.exists(layout.request):
        old = read_request(layout)
        if old != identity and _plan_level_change(old, identity) and not layout.exists(layout.plan):
            # Nothing downstream of the scan exists yet (e.g. the plan refused the weights):
            # a change to the plan's settings costs nothing, so take it instead of refusing.
            changes = diff_dicts(old, identity)
            log(
                req,
                f"linepairs: {req.out} is not planned yet; taking the changed settings: {'; '.join(changes[:4])}",
            )
            layout.write_json(layout.request, identity)
        elif old != identity:
            refuse_changed_request(req, layout, old, identity)
    elif not layout.is_empty():
        raise BuildRefused(
            f"{req.out} exists, is not empty and is not a linepairs build; choose another --out"
        )
    else:
        layout.write_json(layout.request, identity)
    return None


def read_request(layout: Layout) -> dict[str, Any]:
    """``_state/request.json`` of an unfinished build; one line when it is damaged (nothing committed
    says what the request was, so it cannot be restored)."""
    try:
        return layout.read_json(layout.request)
    except DamagedFileError as exc:
        raise BuildRefused(
            f"{exc}; the build is unfinished, so its request cannot be recovered: delete {layout.out} "
            "and build again"
        ) from None


def _without_weights(identity: dict[str, Any], sources: bool = False) -> dict[str, Any]:
    config = {k: v for k, v in identity["config"].items() if k != "weights"}
    kept = [] if sources else [{k: v for k, v in s.items() if k != "share"} for s in identity["sources"]]
    return {"contract": identity["contract"], "config": config, "sources": kept}


def refuse_changed_request(
    req: BuildRequest, layout: Layout, old: dict[str, Any], new: dict[str, Any]
) -> None:
    """Raise BuildRefused naming what changed and the command that would do it.

    Returns (accepts the request) only when just the weights changed and OUT already holds a
    weight version of exactly that policy.
    """
    changes = diff_dicts(old, new)
    shown = f"{'; '.join(changes[:8])}{' ...' if len(changes) > 8 else ''}"
    finished = finished_build(layout) is not None
    if finished and _without_weights(old) == _without_weights(new):
        from ..tools.reweight import stored_policies

        if req.config.weights in stored_policies(layout).values():
            return
        raise BuildRefused(
            f"{req.out} is finished and only its weights changed ({shown}); weights change without "
            f"rewriting a shard: `linepairs reweight {req.out} --config FILE --activate`"
        )
    if finished and _without_weights(old, sources=True) == _without_weights(new, sources=True):
        raise BuildRefused(
            f"{req.out} is finished and the sources changed ({shown}); add new inputs with "
            f"`linepairs build SOURCE... --out {req.out} --append`"
        )
    raise BuildRefused(
        f"{req.out} was built with a different request; changed: {shown}. That changes the shards: "
        f"use a new --out, or delete {req.out} to rebuild."
    )


class IntegrityError(Exception):
    """OUT's files disagree and what is damaged cannot be rebuilt from the rest; the message names them."""


@dataclass
class Finished:
    """The last commit of a finished build: build.json as committed, and what is wrong with
    build.json and its copy (relative path -> why)."""

    record: dict[str, Any]
    problems: dict[str, str]


def last_increment(layout: Layout) -> int:
    """The highest increment number that recorded its request (0: none)."""
    found = [p for p in layout.files(layout.path("_state", "increments")) if p.endswith("/request.json")]
    numbers = [int(p.rsplit("/", 2)[-2]) for p in found if p.rsplit("/", 2)[-2].isdigit()]
    return max(numbers, default=0)


def finished_build(layout: Layout) -> Finished | None:
    """The last commit of OUT, or None when OUT holds no finished build.

    IntegrityError when build.json and its copy are both lost but OUT has had increments: the
    plain build's finalize would roll those back, so only the last increment may finish it.
    """
    record, problems = committed(layout)
    if record is not None:
        return Finished(record, problems)
    last = last_increment(layout)
    if last:
        raise IntegrityError(
            f"{layout.out}: build.json and its copy _state/build.json are both missing or damaged "
            f"({'; '.join(f'{k}: {v}' for k, v in problems.items()) or 'missing'}), and OUT has had "
            f"{last} --append/--retry run(s): run the last of them again (it finishes from its own "
            "snapshot); a plain build would roll them back"
        )
    return None
