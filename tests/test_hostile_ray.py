"""The embedded Ray serves no one else: every socket its processes listen on is on loopback (was:
the GCS and the raylet listened on every interface, with only Ray's token in the way)."""

from __future__ import annotations

import ipaddress

import pytest

from pipelines.raycluster import is_loopback


def test_the_embedded_ray_listens_on_loopback_only(ray_cluster):
    """The session's Ray is started by ``ray_session`` (tests/conftest.py): its GCS, raylet, agents
    and workers are children of this process; a task makes sure workers have started."""
    psutil = pytest.importorskip("psutil")
    import ray

    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = proc.name()
            sockets = proc.net_connections(kind="inet")
        except psutil.Error:  # a worker that exited meanwhile
            continue
        listening += [(name, s.laddr.ip, s.laddr.port) for s in sockets if s.status == psutil.CONN_LISTEN]
    names = {name for name, _, _ in listening}
    assert "gcs_server" in names and "raylet" in names, listening  # the check sees Ray's own servers
    for name, ip, port in listening:
        address = ipaddress.ip_address(ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        assert address.is_loopback, f"{name} listens on {ip}:{port}"
    assert is_loopback(ray_cluster), ray_cluster  # and it advertises a loopback address to joiners


def test_is_loopback():
    assert (
        is_loopback("127.0.0.1:6379") and is_loopback("localhost:1") and is_loopback("ray://127.0.0.2:10001")
    )
    assert is_loopback("[::1]:6379")
    assert not is_loopback("10.0.0.5:6379") and not is_loopback("auto") and not is_loopback("head:6379")


DRIVER_SCRIPT = """
import os, sys
from pipelines.raycluster import ray_session, DRIVER_LOG
import ray
with ray_session(sys.argv[1]):
    # what Ray's C++ core worker does when a task fails as the job ends: a raw write to fd 2
    os.write(2, b"[E task_manager.cc:1545] Failed to push error to driver\\n")
    print("linepairs build: error: the one line", file=sys.stderr)
    print(os.path.join(ray._private.worker.global_worker.node.get_logs_dir_path(), DRIVER_LOG))
print("after the session", file=sys.stderr)
"""


def test_ray_chatter_on_the_drivers_stderr_goes_to_a_log(ray_cluster):
    """A CLI driver's stderr carries only our lines (the disk-full test once got Ray's C++
    ``task_manager.cc`` line beside the one error line); Ray's lines are kept in its logs folder."""
    import subprocess
    import sys

    from tests.helpers import REPO

    res = subprocess.run([sys.executable, "-c", DRIVER_SCRIPT, ray_cluster], capture_output=True, text=True,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["linepairs build: error: the one line", "after the session"]
    with open(res.stdout.strip()) as fh:
        assert "task_manager.cc:1545" in fh.read()


FAULT_SCRIPT = """
import faulthandler, sys
from pipelines.raycluster import ray_session
with ray_session(sys.argv[1]):
    print("joined", file=sys.stderr)
    faulthandler._sigsegv()  # a real SIGSEGV, as a fault in Ray's C++ teardown would raise
"""


def test_a_fatal_signal_in_the_session_is_reported_on_the_terminal(ray_cluster):
    """A driver that dies of a native fault while its descriptor 2 points at the driver log (a CI
    build once exited -11 after its last shard with nothing on stderr) says so on the terminal,
    with the Python stack it was in."""
    import subprocess
    import sys

    from tests.helpers import REPO

    res = subprocess.run([sys.executable, "-c", FAULT_SCRIPT, ray_cluster], capture_output=True, text=True,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert res.returncode == -11, (res.returncode, res.stderr)
    assert res.stderr.startswith("joined\n"), res.stderr
    assert "Fatal Python error: Segmentation fault" in res.stderr
    assert 'File "<string>", line 6' in res.stderr  # the frame that faulted


LEAN_SCRIPT = """
import json, time, psutil, ray
import ray._private.services as services
from pipelines.raycluster import ray_session

looks = []  # seconds of each call of Node's wait for the raylet (it asks the GCS once a second)
node_wait = services.get_node
def timed_get_node(*args, **kwargs):
    t = time.perf_counter()
    try:
        return node_wait(*args, **kwargs)
    finally:
        looks.append(time.perf_counter() - t)
services.get_node = timed_get_node

me = psutil.Process()
with ray_session(None, chatter_to_log=False):
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    import ray.data
    assert sorted(r["id"] for r in ray.data.range(4).map(lambda r: {"id": r["id"] * 2}).iter_rows()) == [0, 2, 4, 6]
    procs = me.children(recursive=True)
    lines = [" ".join(p.cmdline()) for p in procs]
    config = ray._private.state.state.get_system_config()
gone, alive = psutil.wait_procs(procs, timeout=10)
print(json.dumps({"lines": lines, "alive": [" ".join(p.cmdline()) for p in alive], "looks": looks,
                  "task_events_ms": config.get("task_events_report_interval_ms")}))
"""


def test_the_embedded_ray_starts_only_what_a_build_uses_and_stops_all_of_it():
    """No autoscaler monitor, log monitor or dashboard head (a quarter of a build's fixed cost on a
    small machine: docs/scale.md); tasks and Ray Data run; every process is gone after the session.
    Node's own wait for the raylet finds it registered at its first look: it never sleeps its
    second between looks (``raycluster.wait_for_raylet``); no task events are recorded."""
    import json
    import subprocess
    import sys

    from tests.helpers import REPO

    res = subprocess.run([sys.executable, "-c", LEAN_SCRIPT], capture_output=True, text=True, cwd=REPO,
                         timeout=180)  # fmt: skip
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    text = "\n".join(seen["lines"])
    assert "gcs_server" in text and "raylet" in text, text  # the check sees Ray's own processes
    for unwanted in ("autoscaler/_private/monitor.py", "log_monitor.py", "dashboard/dashboard.py"):
        assert unwanted not in text, text
    assert seen["alive"] == []
    assert seen["looks"] and seen["looks"][0] < 0.5, seen["looks"]
    assert seen["task_events_ms"] == 0  # no task events: nothing here reads them, shutdown flushed them
