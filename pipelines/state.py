"""Moved: OUT's layout and its atomic writes live in ``sharding.layout`` (kept as an alias for old imports)."""

from __future__ import annotations

from sharding.layout import Layout, atomic_write_bytes

__all__ = ["Layout", "atomic_write_bytes"]
