"""Decode limits every reader of untrusted images shares."""

from __future__ import annotations

# Decompression-bomb guard: the most pixels an image may declare (checked on its header, before any
# pixel is decoded); the build's default (``[scan] max_pixels``) and the limit of every one-off read
# (``linepairs extract``, ``sample``, ``calibrate``, the benches).
MAX_PIXELS = 64_000_000

__all__ = ["MAX_PIXELS"]
