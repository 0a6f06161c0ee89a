"""The request of a build, an append or a retry: its types, its refusals and its log (no phase
needs the driver for them)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from curation.records import REJECT_REASONS
from curation.sources import SourceSpec
from curation.storage import SourceStorage
from groundwork.contract import CONTRACT_VERSION
from sharding.integrity import committed
from sharding.layout import Layout

from ..config import BuildConfig, ConfigError
from ..phasetimes import PhaseTrace


class BuildRefused(Exception):
    """The request conflicts with what OUT already holds; the message says what differs."""


@dataclass
class BuildRequest:
    sources: list[SourceSpec]
    out: str
    config: BuildConfig = field(default_factory=BuildConfig)
    address: str | None = None
    show_progress: bool = True
    # OUT opened with its storage options (None: opened from ``out``); never part of the identity,
    # so credentials given as options are not written into OUT.
    layout: Layout | None = field(default=None, repr=False)
    append: bool = False  # add the inputs not yet seen to the finished build (pipelines/build/)
    retry: tuple[str, ...] = ()  # re-scan the rejects of these reasons ("all": every reject)
    # The filesystems of URL sources (curation.storage); like ``layout``, never part of the identity.
    storage: SourceStorage | None = field(default=None, repr=False)
    # per-unit timestamps for the build bench (pipelines/phasetimes.py); never part of the identity
    trace: PhaseTrace | None = field(default=None, repr=False)

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to resume OUT instead of being refused."""
        return {
            "contract": CONTRACT_VERSION,
            "config": self.config.to_dict(),
            # through JSON, as request.json holds it (tuples become lists)
            "sources": json.loads(json.dumps([dataclasses.asdict(s) for s in self.sources])),
        }


@dataclass
class BuildSummary:
    out: str
    counts: dict[str, Any]
    timings: dict[str, float]
    already_complete: bool = False
    weights: dict[str, Any] | None = None  # curation.weighting.weight_summary
    repaired: list[str] = field(default_factory=list)  # files a re-run rebuilt (pipelines/repair.py)
    notes: list[str] = field(
        default_factory=list
    )  # what an append did to the weight versions besides re-solving

    def lines(self) -> list[str]:
        c = self.counts
        lines = [
            f"inputs      {c['inputs']}",
            f"kept        {c['samples']} samples in {c['shards']} shards ({_human(c['bytes'])})",
            f"rejected    {c['rejected']}",
        ]
        for reason, n in sorted(c["rejects_by_reason"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason:<22}{n}")
        lines += _weight_lines(self.weights)
        lines += [f"note        {n}" for n in self.notes]
        total = self.timings.get("total", 0.0)
        if total and not self.already_complete:
            lines.append(f"throughput  {c['samples'] / total:.2f} samples/s over {total:.1f} s")
        lines.append(f"output      {self.out}")
        lines.append(f"next        linepairs verify {self.out}")
        return lines


def _weight_lines(w: dict[str, Any] | None) -> list[str]:
    if not w or not w.get("samples"):
        return []
    share = w["intended_share"]
    fmt = lambda d: ", ".join(f"{k} {v:.1%}" for k, v in d.items())  # noqa: E731
    draws = w["expected_draws"]
    return [
        f"draws       by source: {fmt(share['source'])}; by tier: {fmt(share['tier'])}",
        f"weights     effective sample size {w['effective_sample_size']:.0f} of {w['samples']}; "
        f"expected draws per sample in {draws['training_samples']} (median {draws['median']:.2f}, max {draws['max']:.2f})",
    ]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def log(req: BuildRequest, msg: str) -> None:
    if req.show_progress:
        print(msg, file=sys.stderr, flush=True)


FRESH, APPEND, RETRY = (
    "build",
    "append",
    "retry",
)  # what a build selects: every input, the unseen, the rejects


# Sections a retry may change: curation settings read by the scan ("all rejects after a curation change").
RETRY_MAY_CHANGE = ("filters", "metrics", "quality")


ALL_REASONS = "all"


def known_reasons() -> set[str]:
    return {r for reasons in REJECT_REASONS.values() for r in reasons}


def parse_reasons(text: str) -> tuple[str, ...]:
    """``missing_file,decode_error`` or ``all`` -> reasons; ConfigError naming an unknown one."""
    reasons = tuple(sorted({r.strip() for r in text.split(",") if r.strip()}))
    if not reasons:
        raise ConfigError("--retry needs REASON[,REASON] (see docs/rejects.md) or 'all'")
    if ALL_REASONS in reasons:
        return (ALL_REASONS,)
    unknown = sorted(set(reasons) - known_reasons())
    if unknown:
        raise ConfigError(
            f"--retry: unknown reject reason(s) {', '.join(unknown)}; the reasons are in docs/rejects.md"
        )
    return reasons


def recorded_build_config(layout: Layout) -> Any:
    """The config OUT's last commit was built with (what an ``--append``/``--retry`` without
    ``--config`` uses); the defaults when OUT holds no finished build (the append is a plain build)."""
    from ..config import BuildConfig, config_from_record

    record, _ = committed(layout)
    if record is None:
        return BuildConfig()
    return config_from_record(record["request"]["config"])
