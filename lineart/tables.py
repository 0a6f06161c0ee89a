"""Strict construction of the parameter dataclasses (augment policy, pair quality) from config tables."""

from __future__ import annotations

import dataclasses
from typing import Any


def from_table(cls, data: dict[str, Any], where: str):
    """Strict construction from a config table: known keys, matching types (int accepted for float)."""
    if not isinstance(data, dict):
        raise ValueError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(unknown)}; known: {', '.join(fields)}")
    defaults = cls()
    values = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ValueError(f"{where}.{key} must be {type(default).__name__}, got {value!r}")
        values[key] = value
    obj = cls(**values)
    obj.check()
    return obj
