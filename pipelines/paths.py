"""Where the read-only shared folder is: ``$LINEPAIRS_SHARED``, else ``../shared`` beside the repo."""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_dir() -> str | None:
    path = os.environ.get("LINEPAIRS_SHARED") or os.path.join(os.path.dirname(REPO_ROOT), "shared")
    return path if os.path.isdir(path) else None


def corpus_illustrations() -> str | None:
    shared = shared_dir()
    path = os.path.join(shared, "corpus", "illustrations") if shared else None
    return path if path and os.path.isdir(path) else None
