"""Where a build's time goes: per-unit timestamps from the workers, summed per phase on the driver.

Each scan task and shard call stamps its own start and end (wall clock, ``time.time``: comparable
across the processes of one machine) and the CPU seconds its kernel used (``time.process_time``);
the driver records each phase's bounds. From those, ``phase_table`` splits a phase's capacity
(wall seconds x cores) into kernel work, time inside a unit that was not kernel CPU (I/O, Ray
argument transfer, GIL waits), and idle core-seconds at the phase's start (before every core is
busy), in its middle and at its tail (after the first core runs dry). The in-unit time that was
not kernel CPU is split once more by the run-queue wait (Linux ``schedstat``): on a shared machine
most of it is other jobs holding the cores. A few clock reads per unit: nothing per sample or pixel.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def _runqueue_wait_s() -> float | None:
    """Seconds this thread has been ready to run but waiting for a core (Linux schedstat), or None."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def unit_clock(record: dict[str, Any]) -> Iterator[None]:
    """Fill ``record`` with ``t0``/``t1`` (wall clock), ``cpu`` (this process's CPU seconds) and,
    on Linux, ``wait``: the seconds the unit was runnable but another process had the core (a
    shared machine's load, told apart from our own overhead)."""
    record["t0"], cpu0, wait0 = time.time(), time.process_time(), _runqueue_wait_s()
    try:
        yield
    finally:
        record["t1"], record["cpu"] = time.time(), time.process_time() - cpu0
        wait1 = _runqueue_wait_s()
        if wait0 is not None and wait1 is not None:
            record["wait"] = wait1 - wait0


@dataclass
class PhaseTrace:
    """Collected on the driver when a caller (the build bench) asks for it: ``BuildRequest.trace``."""

    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    units: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    starts: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # actor start-ups

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.time()
        try:
            yield
        finally:
            self.bounds[name] = (t0, time.time())

    def unit(self, phase: str, timing: dict[str, float] | None) -> None:
        if timing:
            self.units.setdefault(phase, []).append(timing)
            if "born" in timing:  # the first call of an actor carries its start-up
                self.starts.setdefault(phase, []).append((timing["born"], timing["ready"]))


def _busy_steps(units: list[dict[str, float]], t0: float, t1: float) -> list[tuple[float, float, int]]:
    """(from, to, units running) pieces covering [t0, t1]."""
    events = sorted([(max(t0, u["t0"]), 1) for u in units] + [(min(t1, u["t1"]), -1) for u in units])
    steps, now, running = [], t0, 0
    for t, delta in events:
        if t > now:
            steps.append((now, t, running))
            now = t
        running += delta
    if t1 > now:
        steps.append((now, t1, running))
    return steps


def phase_row(
    bounds: tuple[float, float], units: list[dict[str, float]], cores: int,
    starts: list[tuple[float, float]] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Core-seconds of one phase: capacity, kernel CPU, in-unit non-kernel time and idle start/middle/tail."""
    t0, t1 = bounds
    wall = t1 - t0
    steps = _busy_steps(units, t0, t1)
    full = [s for s in steps if s[2] >= cores]
    first_full = full[0][0] if full else t1
    last_full = full[-1][1] if full else t1

    def idle(a: float, b: float) -> float:
        return sum(max(0, cores - n) * (min(b, e) - max(a, s)) for s, e, n in steps if min(b, e) > max(a, s))

    unit_s = sum(min(t1, u["t1"]) - max(t0, u["t0"]) for u in units)
    kernel = sum(u["cpu"] for u in units)
    waited = sum(u.get("wait", 0.0) for u in units)
    row = {
        "wall_s": wall,
        "capacity_core_s": wall * cores,
        "units": len(units),
        "kernel_cpu_core_s": kernel,
        "in_unit_not_kernel_core_s": max(0.0, unit_s - kernel),
        # of which: runnable, but the core was another process's (other jobs on a shared machine)
        "in_unit_runqueue_wait_core_s": waited,
        "idle_start_core_s": idle(t0, first_full),
        "idle_middle_core_s": idle(first_full, last_full) if full else 0.0,
        "idle_tail_core_s": idle(last_full, t1) if full else 0.0,
        "first_unit_starts_after_s": (min(u["t0"] for u in units) - t0) if units else wall,
    }
    if starts:
        row["actor_start_s_median"] = sorted(b - a for a, b in starts)[len(starts) // 2]
    row["kernel_share"] = kernel / row["capacity_core_s"] if wall > 0 else 0.0
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def phase_table(trace: PhaseTrace, cores: int) -> dict[str, dict[str, float]]:
    """Every traced phase's row; phases without units (enumerate, plan) are all driver time."""
    return {
        name: phase_row(bounds, trace.units.get(name, []), cores, trace.starts.get(name))
        for name, bounds in trace.bounds.items()
    }


def gap_to_floor(
    phases: dict[str, dict[str, float]], timings: dict[str, float], floor_s: float,
    beyond_kernel_core_s: float, cores: int,
) -> dict[str, float]:  # fmt: skip
    """Where a build's wall seconds beyond the floor's (``floor_s``: the same work at the floor's
    rate) went, in wall seconds (core-seconds / ``cores``); the parts add up to ``total``:

    * ``outside_phases``: outside every phase of ``timings`` (Ray's start and stop and the finalize,
      when ``total`` is the command's wall);
    * ``driver_phases``: the phases without units (enumerate, plan), the cores waiting for the driver;
    * ``idle_cores``: idle core-seconds at the unit phases' starts, middles and tails;
    * ``in_unit_not_kernel``: unit time that was not its process's CPU (``of_which_run_queue_wait``:
      runnable while another process had the core);
    * ``shard_work_beyond_kernel``: the shard work the kernel floor leaves out (the pair check, the
      input's sha256, the sample JSON, the tar and its fsync: ``beyond_kernel_core_s``, measured);
    * ``kernel_cpu_above_floor``: the rest of the units' CPU above the floor's (the same work run
      slower in the build: two processes sharing one machine, Ray's threads in each worker).
    """
    worked = {name: row for name, row in phases.items() if row["units"]}
    outside = timings["total"] - sum(v for k, v in timings.items() if k != "total")
    driver = sum(v for k, v in timings.items() if k != "total" and k not in worked)
    idle = sum(
        r["idle_start_core_s"] + r["idle_middle_core_s"] + r["idle_tail_core_s"] for r in worked.values()
    )
    kernel = sum(r["kernel_cpu_core_s"] for r in worked.values())
    parts = {
        "total": timings["total"] - floor_s,
        "outside_phases": outside,
        "driver_phases": driver,
        "idle_cores": idle / cores,
        "in_unit_not_kernel": sum(r["in_unit_not_kernel_core_s"] for r in worked.values()) / cores,
        "of_which_run_queue_wait": sum(r["in_unit_runqueue_wait_core_s"] for r in worked.values()) / cores,
        "shard_work_beyond_kernel": beyond_kernel_core_s / cores,
        "kernel_cpu_above_floor": (kernel - beyond_kernel_core_s) / cores - floor_s,
    }
    return {k: round(v, 3) for k, v in parts.items()}


__all__ = ["PhaseTrace", "gap_to_floor", "phase_row", "phase_table", "unit_clock"]
