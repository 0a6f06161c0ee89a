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
