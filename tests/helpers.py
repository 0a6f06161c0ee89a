"""Helpers for tests that run the real CLI in a subprocess against the session's Ray."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, address: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.cli", *args]
    if address and args and args[0] == "build":
        cmd += ["--address", address]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def popen_build(*args: str, address: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipelines.cli", "build", *args, "--address", address, "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)


def write_config(path: str, text: str) -> str:
    with open(path, "w") as fh:
        fh.write(text)
    return path
