"""``linepairs bench`` sections; helpers shared by them."""

from __future__ import annotations

import os
import shutil


def link_or_copy(src: str, dst: str) -> None:
    """Put a corpus file into a bench's source folder: a hard link (no copy, and not a symlink,
    which the sources refuse to follow out of their folder), else a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy(src, dst)
