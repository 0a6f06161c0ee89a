"""A frozen config dataclass from a TOML table: unknown keys and wrong types are errors (ValueError).

The one strict parser of config tables; every section of build.toml goes through it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_table(cls: type[T], data: Any, where: str) -> T:
    """A frozen dataclass from a TOML table with strict keys and types (bool, int, float, str, lists)."""
    if not isinstance(data, dict):
        raise ValueError(f"[{where}] must be a table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(unknown)}; known: {', '.join(known)}")
    default = cls()
    values = {}
    for key, value in data.items():
        want = getattr(default, key)
        if isinstance(want, bool):
            ok = isinstance(value, bool)
        elif isinstance(want, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(want, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(want, str):
            ok = isinstance(value, str)
        elif isinstance(want, tuple) and want and not isinstance(want[0], str):
            ints = all(isinstance(v, int) for v in want)  # integer ranges stay integers
            number = int if ints else int | float
            ok = (
                isinstance(value, list | tuple)
                and len(value) == len(want)
                and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
            )
            value = tuple(v if ints else float(v) for v in value) if ok else value
        elif isinstance(want, tuple):
            ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        elif want is None:
            ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        else:
            ok = True
        if not ok:
            kind = f"a list like {list(want)}" if isinstance(want, tuple) else type(want).__name__
            raise ValueError(f"{where}.{key} must be {kind}, got {value!r}")
        values[key] = value
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check()
    return obj
