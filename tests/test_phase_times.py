"""The phase table of the build bench: every core-second of a phase is accounted for once, and a real
build's workers report one timed unit per scan task and per shard."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from curation.dedup import DedupConfig
from curation.sources import parse_source
from pipelines.build.request import BuildRequest
from pipelines.build.run import run_build
from pipelines.config import DEFAULT_EXTRACTORS, BuildConfig, ExtractorSpec
from pipelines.phasetimes import PhaseTrace, gap_to_floor, phase_row, phase_table
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


def _traced_build(
    corpus: str, out: str, extractors: tuple[ExtractorSpec, ...] = DEFAULT_EXTRACTORS, chunk_size: int = 0
) -> PhaseTrace:
    """A traced build of four copies of each image, dedup off: buckets of 4 or more samples in shards
    of up to 3, so shard sizes differ. Checks what holds however the shards are written."""
    for name in os.listdir(corpus):
        stem, ext = os.path.splitext(name)
        for k in (1, 2, 3):
            shutil.copy(os.path.join(corpus, name), os.path.join(corpus, f"{stem}_copy{k}{ext}"))
    base = BuildConfig()
    cfg = dataclasses.replace(
        base, shards=dataclasses.replace(base.shards, samples_per_shard=3), dedup=DedupConfig(enabled=False),
        scan=dataclasses.replace(base.scan, chunk_size=chunk_size),
        extractors=extractors,
    )  # fmt: skip
    trace = PhaseTrace()
    summary = run_build(BuildRequest([parse_source(corpus)], out, cfg, show_progress=False, trace=trace))
    assert set(trace.bounds) == {"scan", "plan", "materialize"}
    layout = Layout(out)
    scan_parts = len([n for n in os.listdir(layout.scan_dir) if n.endswith(".parquet")])
    assert len(trace.units["scan"]) == scan_parts
    assert len(trace.units["materialize"]) == summary.counts["shards"] > 1
    table = phase_table(trace, cores=2)
    for name, row in table.items():
        assert _split(row) == pytest.approx(row["capacity_core_s"], abs=0.01), name
    for unit in trace.units["scan"] + trace.units["materialize"]:
        lo, hi = trace.bounds["scan" if unit in trace.units["scan"] else "materialize"]
        assert lo <= unit["t0"] <= unit["t1"] <= hi and unit["cpu"] > 0
        if os.path.exists("/proc/thread-self/schedstat"):  # Linux: the run-queue wait is told apart
            assert 0 <= unit["wait"] <= unit["t1"] - unit["t0"] + 0.01
    # largest shards first: each process writes its shards in non-increasing size
    by_process: dict[int, list[dict[str, float]]] = {}
    for unit in sorted(trace.units["materialize"], key=lambda u: u["t0"]):
        by_process.setdefault(int(unit["pid"]), []).append(unit)
    sizes = sorted(u["samples"] for u in trace.units["materialize"])
    assert sizes[0] < sizes[-1]  # the shards differ in size, so the order is tested
    for units in by_process.values():
        assert [u["samples"] for u in units] == sorted((u["samples"] for u in units), reverse=True)
    # the timing travels with the answer, not into the shard state files
    for name in os.listdir(layout.shard_states_dir):
        assert "timing" not in layout.read_json(os.path.join(layout.shard_states_dir, name)), name
    return trace


def test_classical_shards_are_tasks_on_the_scans_warm_workers(small_corpus, ray_cluster, tmp_path):
    trace = _traced_build(small_corpus, str(tmp_path / "out"), chunk_size=4)  # 8 scan units: every core scans
    # no process started between the scan and the shards: every shard ran in a worker that had
    # scanned (the extractors are classical and the cluster has no GPU: materialize.shards_on_tasks)
    scanned = {int(u["pid"]) for u in trace.units["scan"]}
    assert {int(u["pid"]) for u in trace.units["materialize"]} <= scanned
    assert "materialize" not in trace.starts  # no actor


def test_learned_extractor_shards_are_written_on_actors_started_ahead(
    small_corpus, ray_cluster, shared, tmp_path
):
    weights = os.path.join(shared, "weights", "pidinet", "table5_pidinet-tiny.pth")
    trace = _traced_build(small_corpus, str(tmp_path / "out"), (ExtractorSpec("pidinet", weights),))
    # every actor's first answer carried its start-up, once
    assert 1 <= len(trace.starts["materialize"]) <= len(trace.units["materialize"])
    # the materialize actors start ahead of the phase (in the scan's tail on this one-node cluster),
    # but only on cores no scan task holds or waits for (an actor holds its core for life); in the
    # scan's tail they leave one core for the driver's own tasks, and the rest start with the plan
    # (a fresh build: no Ray task of the driver comes before the shards, run.no_tasks_before_materialize)
    import ray

    cpus = int(ray.cluster_resources()["CPU"])
    borns = sorted(born for born, _ in trace.starts["materialize"])
    if cpus > 1:
        assert borns[0] < trace.bounds["materialize"][0]
    in_scan = [born for born in borns if born < trace.bounds["scan"][1]]
    assert len(in_scan) <= cpus - 1
    for k, born in enumerate(borns, 1):
        running = sum(1 for u in trace.units["scan"] if u["t1"] > born)
        assert running + k <= cpus, (k, running, cpus)
    scanned = {int(u["pid"]) for u in trace.units["scan"]}
    assert not {int(u["pid"]) for u in trace.units["materialize"]} & scanned  # the actors' own processes


def test_gap_to_floor_adds_up_to_the_build_beyond_the_floor():
    # 2 cores; the build took 30 s: 1.5 s outside its phases, 0.5 s of driver phases, a 20 s scan
    # and an 8 s materialize whose rows are split exactly as phase_row splits them
    scan = {"units": 20, "wall_s": 20.0, "kernel_cpu_core_s": 37.0, "in_unit_not_kernel_core_s": 1.0,
            "in_unit_runqueue_wait_core_s": 0.6, "idle_start_core_s": 1.2, "idle_middle_core_s": 0.4,
            "idle_tail_core_s": 0.4}  # fmt: skip
    shards = {"units": 23, "wall_s": 8.0, "kernel_cpu_core_s": 14.0, "in_unit_not_kernel_core_s": 1.2,
              "in_unit_runqueue_wait_core_s": 0.8, "idle_start_core_s": 0.7, "idle_middle_core_s": 0.1,
              "idle_tail_core_s": 0.0}  # fmt: skip
    plan = {"units": 0, "wall_s": 0.4}
    timings = {"enumerate": 0.1, "scan": 20.0, "plan": 0.4, "materialize": 8.0, "total": 30.0}
    gap = gap_to_floor({"scan": scan, "plan": plan, "materialize": shards}, timings, 24.0, 2.0, 2)
    assert gap["total"] == 6.0
    assert gap["outside_phases"] == 1.5 and gap["driver_phases"] == 0.5
    assert gap["idle_cores"] == 1.4 and gap["in_unit_not_kernel"] == 1.1
    assert gap["of_which_run_queue_wait"] == 0.7
    assert gap["shard_work_beyond_kernel"] == 1.0
    assert gap["kernel_cpu_above_floor"] == 0.5  # (37 + 14 - 2) / 2 - 24
    parts = [v for k, v in gap.items() if k not in ("total", "of_which_run_queue_wait")]
    assert sum(parts) == pytest.approx(gap["total"])
