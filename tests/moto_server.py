"""A moto S3 server in its own process, for the object-storage tests (skips where moto or s3fs is missing)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import NamedTuple

import pytest


class Moto(NamedTuple):
    proc: subprocess.Popen
    endpoint: str  # http://127.0.0.1:PORT
    log: str  # the server's request log (one line per request, with its status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(folder, **env: str) -> Moto:
    """A server on a free port, its log in ``folder``, ``env`` added to its environment; answering
    when this returns."""
    pytest.importorskip("s3fs")
    port = free_port()
    log = os.path.join(folder, f"moto-{port}.log")
    with open(log, "w") as fh:  # the server keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env})  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Moto(proc, f"http://127.0.0.1:{port}", log)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"the moto S3 server did not start (python -m moto.server, exit {proc.poll()})")
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)
