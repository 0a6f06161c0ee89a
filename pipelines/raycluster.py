"""Join a Ray cluster (``--address`` / ``RAY_ADDRESS``) or start an embedded one sized to this machine."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[str]:
    """Yield a description of the cluster in use; shut down only what this call started."""
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if address:
            try:
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
            # address="local" always starts a fresh instance: without it ray.init() joins any
            # cluster already running on the machine (or a stale ray_current_cluster file) and
            # then refuses num_cpus. Bound to loopback: an embedded build serves no one else.
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
            )
            where = "embedded Ray"
    try:
        yield f"{where} ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, {ray.cluster_resources().get('GPU', 0):.0f} GPUs)"
    finally:
        ray.shutdown()


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
