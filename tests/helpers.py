"""Helpers for tests: the real CLI in a subprocess against the session's Ray, corpus folders, file digests."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Three small corpus images (two JPEGs, a PNG): a quick build's input.
THREE_IMAGES = ("anime2sketch_001.jpg", "style2paints_004.jpg", "danbooregion_007.png")


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


def corpus_folder(corpus: str, folder: str | os.PathLike, names: Iterable[str]) -> str:
    """``folder`` (made if missing) holding copies of the named corpus images: copies, because a
    source does not read links that leave it."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        shutil.copy(os.path.join(corpus, name), os.path.join(folder, name))
    return str(folder)


def files_of(top: str, skip_dirs: Collection[str] = ()) -> dict[str, str]:
    """Every file below ``top`` (private state included, folders named in ``skip_dirs`` left out),
    by path relative to it -> its sha256."""
    found = {}
    for root, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if d not in skip_dirs]
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, top)] = hashlib.sha256(fh.read()).hexdigest()
    return found


def kill_when(
    proc: subprocess.Popen,
    reached: Callable[[], Any],
    seconds: float,
    what: str = "build",
    poll: float = 0.01,
) -> None:
    """SIGKILL ``proc`` (a ``what``: no cleanup runs, as if killed at any moment) once ``reached()``
    (asked every ``poll`` seconds); its ending first, or ``seconds`` passing, fails the test."""
    deadline = time.monotonic() + seconds
    while not reached():
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            pytest.fail(f"{what} ended before the kill point: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("kill point never reached")
        time.sleep(poll)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


class WritesOnUnpickle:
    """A pickled object that creates the file ``path`` when it is unpickled: a checkpoint carrying
    it must be refused before that (``weights_only=True``); the file's absence proves no code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
