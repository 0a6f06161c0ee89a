"""The phase table of the build bench: every core-second of a phase is accounted for once, and a real
build's workers report one timed unit per scan task and per shard."""

from __future__ import annotations

import dataclasses
import os

import pytest

from pipelines.build import BuildRequest, run_build
from pipelines.config import BuildConfig
from pipelines.phasetimes import PhaseTrace, phase_row, phase_table
from sharding.layout import Layout


def _split(row: dict[str, float]) -> float:
    return (
        row["kernel_cpu_core_s"] + row["in_unit_not_kernel_core_s"]
        + row["idle_start_core_s"] + row["idle_middle_core_s"] + row["idle_tail_core_s"]
    )  # fmt: skip


def test_capacity_splits_into_kernel_overhead_and_idle():
    # 2 cores, phase 0..10 s: one core starts at 1 s, the other at 2 s; a gap on one core from 5 to
    # 6 s; one core runs dry at 8 s, the other at 9 s.
    units = [
        {"t0": 1.0, "t1": 5.0, "cpu": 3.0}, {"t0": 6.0, "t1": 9.0, "cpu": 3.0},
        {"t0": 2.0, "t1": 8.0, "cpu": 5.0},
    ]  # fmt: skip
    row = phase_row((0.0, 10.0), units, cores=2)
    assert row["capacity_core_s"] == 20.0 and row["units"] == 3
    assert row["kernel_cpu_core_s"] == 11.0
    assert row["in_unit_not_kernel_core_s"] == 2.0  # 13 unit-seconds, 11 of them CPU
    assert row["idle_start_core_s"] == 3.0  # 0..1 both idle, 1..2 one idle
    assert row["idle_middle_core_s"] == 1.0  # the gap 5..6
    assert row["idle_tail_core_s"] == 3.0  # 8..9 one idle, 9..10 both
    assert _split(row) == pytest.approx(row["capacity_core_s"])
    assert row["first_unit_starts_after_s"] == 1.0


def test_phase_without_units_is_all_idle():
    row = phase_row((0.0, 2.0), [], cores=4)
    assert row["idle_start_core_s"] == 8.0 and row["kernel_cpu_core_s"] == 0.0
    assert _split(row) == pytest.approx(row["capacity_core_s"])


def test_a_traced_build_times_every_scan_task_and_shard(small_corpus, ray_cluster, tmp_path):
    cfg = dataclasses.replace(
        BuildConfig(), shards=dataclasses.replace(BuildConfig().shards, samples_per_shard=3)
    )
    trace = PhaseTrace()
    out = str(tmp_path / "out")
    from curation.sources import parse_source

    summary = run_build(
        BuildRequest([parse_source(small_corpus)], out, cfg, show_progress=False, trace=trace)
    )
    assert set(trace.bounds) == {"scan", "plan", "materialize"}
    layout = Layout(out)
    scan_parts = len([n for n in os.listdir(layout.scan_dir) if n.endswith(".parquet")])
    assert len(trace.units["scan"]) == scan_parts
    assert len(trace.units["materialize"]) == summary.counts["shards"] > 1
    # every actor's first answer carried its start-up, once
    assert 1 <= len(trace.starts["materialize"]) <= len(trace.units["materialize"])
    table = phase_table(trace, cores=2)
    for name, row in table.items():
        assert _split(row) == pytest.approx(row["capacity_core_s"], abs=0.01), name
    for unit in trace.units["scan"] + trace.units["materialize"]:
        lo, hi = trace.bounds["scan" if unit in trace.units["scan"] else "materialize"]
        assert lo <= unit["t0"] <= unit["t1"] <= hi and unit["cpu"] > 0
        if os.path.exists("/proc/thread-self/schedstat"):  # Linux: the run-queue wait is told apart
            assert 0 <= unit["wait"] <= unit["t1"] - unit["t0"] + 0.01
    # the timing travels with the answer, not into the shard state files
    for name in os.listdir(layout.shard_states_dir):
        assert "timing" not in layout.read_json(os.path.join(layout.shard_states_dir, name)), name
