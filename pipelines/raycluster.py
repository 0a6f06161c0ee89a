"""Join a Ray cluster (``--address`` / ``RAY_ADDRESS``) or start an embedded one sized to this machine."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator

PROBE_TIMEOUT_S = 5.0  # a head that does not accept a TCP connection in this long is not there


def unreachable(address: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``host:port`` (or ``ray://host:port``) takes no connection; None when it does.

    Ray's own client retries a dead head for minutes, printing C++ warnings; one TCP connect
    answers first. ``auto`` (the machine's running cluster) is left to Ray."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


# Ray's switch for "no cluster": its node address is then 127.0.0.1, and its GCS, raylet, agents
# and workers listen on loopback only. ``_node_ip_address="127.0.0.1"`` is not enough: Ray turns
# a loopback address back into the host's own (services.resolve_ip_for_localhost), and its servers
# then listen on every interface, with only the token between them and a neighbour.
_NO_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While an embedded Ray starts: its processes take the loopback address (they read the
    variable when they start; the driver's copy of the constant is set for the same span)."""
    from ray._private import ray_constants

    before_env, before_const = os.environ.get(_NO_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_NO_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(_NO_CLUSTER_ENV, None)
        else:
            os.environ[_NO_CLUSTER_ENV] = before_env


def is_loopback(address: str) -> bool:
    """``127.x.x.x:port``, ``localhost:port`` or ``[::1]:port`` (optionally ``ray://``)."""
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


@contextlib.contextmanager
def ray_session(address: str | None = None, chatter_to_log: bool = True) -> Iterator[str]:
    """Yield a description of the cluster in use; shut down only what this call started.

    ``chatter_to_log``: Ray's C++ lines on this process's stderr go to a log file (below); a
    process that owns its stderr for longer (a test session) turns it off."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    # Ray's INFO/WARNING chatter (token auth, Ray Data execution notes) would bury our progress bars.
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        yield f"Ray already running in this process ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    head = None  # the embedded head this call starts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if address:
            why = unreachable(address)
            if why is not None:
                from .errors import UsageError

                raise UsageError(
                    f"cannot join the Ray cluster at {address}: nothing answers there ({why}); start the "
                    f"head with `ray start --head` or give its address (README, Run on a cluster)"
                )
            try:
                # A cluster on this machine's loopback (an embedded one, bound as below) is joined
                # from loopback too: Ray would otherwise look for its node under the host's address.
                with loopback_only() if is_loopback(address) else contextlib.nullcontext():
                    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            except ConnectionError as exc:  # one line, with the usual cause (README, Run on a cluster)
                from .errors import UsageError

                raise UsageError(
                    f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]} (is the head "
                    f"running? a head started by `ray start --head` wants token auth: set RAY_AUTH_MODE=token "
                    f"and the head's ~/.ray/auth_token here)"
                ) from None
            where = f"Ray cluster at {address}"
        else:
            # A fresh head of our own, never a cluster already running on the machine (or a stale
            # ray_current_cluster file). Bound to loopback: an embedded build serves no one else.
            with loopback_only():
                head = start_embedded(os.cpu_count() or 1)
                try:
                    ray.init(address=head.address, logging_level=logging.ERROR, log_to_driver=False)
                except BaseException:  # noqa: BLE001 - stop the head we started, then re-raise
                    stop_embedded(head)
                    raise
            where = "embedded Ray"
    try:
        with driver_chatter_to_log() if chatter_to_log else contextlib.nullcontext():
            try:
                yield f"{where} ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f} GPUs)"
            finally:
                ray.shutdown()
    finally:
        if head is not None:
            stop_embedded(head)


def start_embedded(num_cpus: int):  # -> ray._private.node.Node
    """A one-node Ray head for this process: the GCS, the raylet (with its agents) and the workers,
    without the processes a cluster has for its people: the autoscaler monitor, the log monitor
    (``log_to_driver`` is off: worker output stays in the session's log files) and the dashboard
    head (off already; its minimal form served only usage stats, which are off). On a small
    machine they were a quarter of a build's fixed cost: ray.init 2.3 s, of which 0.6 s theirs,
    and ray.shutdown 1.2 s waiting for them to stop, against 0.1-0.3 s without (docs/scale.md).
    If this process is killed before ``stop_embedded``, the GCS and the raylet stop with it as
    they do under ray.init (its agents follow once they find the raylet gone).

    Node waits for the raylet to register by asking the GCS once a second, so a raylet up after
    0.8 s was seen at 1 s and one up after 1.1 s at 2 s; the head asks every 20 ms first (a start
    0.5 s shorter on average here, docs/scale.md)."""
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    class LeanHead(Node):
        def start_api_server(self, *, include_dashboard, raise_on_failure):  # noqa: ARG002 - Node's signature
            self._webui_url = None  # no dashboard head: the raylet is told there is none

        def start_ray_processes(self) -> None:
            super().start_ray_processes()
            wait_for_raylet(self)  # then Node's own once-a-second check finds it at its first look

    # Task events feed the dashboard and the state API, which go through the dashboard head this
    # Ray has not; off, ray.shutdown no longer waits to flush them (0.29 s -> median 0.04 s, docs/scale.md).
    params = RayParams(
        num_cpus=num_cpus, include_dashboard=False, no_monitor=True, include_log_monitor=False,
        _system_config={"task_events_report_interval_ms": 0},
    )  # fmt: skip
    return LeanHead(params, head=True, shutdown_at_exit=False, spawn_reaper=True, ray_init_cluster=True)


RAYLET_POLL_S = 0.02
RAYLET_WAIT_S = 10.0  # then Node's own wait (30 s, raylet_start_wait_time_s) goes on and says why


def wait_for_raylet(head) -> None:
    """Return once the GCS lists ``head``'s raylet, looking every RAYLET_POLL_S; when the raylet has
    exited, on any error or after RAYLET_WAIT_S, return and leave the wait (and its error) to Node."""
    from ray._private import ray_constants

    deadline = time.monotonic() + RAYLET_WAIT_S
    try:
        client = head.get_gcs_client()
        raylet = head.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
        while time.monotonic() < deadline and raylet.poll() is None:
            if any(node_id.hex() == head.node_id for node_id in client.get_all_node_info(timeout=5)):
                return
            time.sleep(RAYLET_POLL_S)
    except Exception:  # noqa: BLE001 - only a faster path: Node's own wait follows and reports failures
        return


def stop_embedded(head) -> None:
    """Stop every process of ``head`` (``start_embedded``), as ray.shutdown does for its own."""
    head.destroy_external_storage()  # objects spilled to disk
    head.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


DRIVER_LOG = "linepairs-driver-stderr.log"  # in the Ray session's logs folder, beside Ray's own


@contextlib.contextmanager
def driver_chatter_to_log() -> Iterator[None]:
    """While this process drives Ray: its C++ core worker's lines (``task_manager.cc: Failed to
    push error to driver`` when a task fails as the job ends, and the like) go to a file in the
    session's logs folder instead of the user's terminal, where they would break the promise of
    one error line. They write to file descriptor 2, so that descriptor is pointed at the file and
    Python's own ``sys.stderr`` (progress, our error lines) at a copy of the terminal's.

    A fatal signal (a fault in native code) is reported on the terminal too, with every thread's
    Python stack: ray.init points ``faulthandler`` at descriptor 2, where the report would land in
    the file and the user would see the process vanish without a word."""
    sink = _open_driver_log()
    if sink is None:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    before = sys.stderr
    os.dup2(sink, 2)
    os.close(sink)
    sys.stderr = open(terminal, "w", buffering=1, encoding=before.encoding, errors="backslashreplace")
    reporting = faulthandler.is_enabled()
    faulthandler.enable(file=sys.stderr, all_threads=True)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # the terminal back on fd 2; the copy stays open for any writer holding it
        sys.stderr = before
        if reporting:
            faulthandler.enable(file=before, all_threads=True)
        else:
            faulthandler.disable()


def _open_driver_log() -> int | None:
    """A descriptor open for appending on the session's driver log; None when ``sys.stderr`` is not
    descriptor 2 (a captured stream: left alone) or there is no local session folder."""
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return None
        import ray

        logs = ray._private.worker.global_worker.node.get_logs_dir_path()
        return os.open(os.path.join(logs, DRIVER_LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except (OSError, AttributeError, ValueError):  # fileno() of a stream without one; no session folder
        return None


def quiet_ray_data() -> None:
    """Ray Data's own progress bars would fight with ours."""
    from ray.data import DataContext

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray"):
            logging.getLogger(name).setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    for attr in ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
