"""Strict config tables: a frozen dataclass from a TOML table, and what differs between two configs.

The one strict parser of config tables: every section of build.toml and of a W-net run config goes
through ``from_table``. Unknown keys and values of the wrong type are errors (``ValueError``, or the
caller's subclass) naming ``section.key``. A field's type annotation says what it accepts:
``bool``, ``int``, ``float`` (an int is taken as a float), ``str``, ``X | None``, ``tuple[T, ...]``
(a list of any length), ``tuple[T1, T2]`` (exactly that many), ``dict[...]`` (a table; its values
are the dataclass's own ``check()`` to judge). After parsing, the dataclass's ``check()`` runs
when it has one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
_MISSING = object()


class _Wrong(Exception):
    """A value that does not fit its annotation (caught and reworded with the key)."""


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: judged by the defaults
        return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse(hint: Any, value: Any) -> Any:
    """``value`` as type ``hint`` (lists become tuples), or _Wrong."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse(arg, value)
            except _Wrong:
                continue
        raise _Wrong
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Wrong
    if hint is float:
        if _is_number(value):
            return float(value)
        raise _Wrong
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Wrong
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Wrong
    if origin is tuple or hint is tuple:
        if not isinstance(value, list | tuple):
            raise _Wrong
        if not args:  # a bare ``tuple``: any list, nested lists as tuples
            return tuple(_parse(tuple, v) if isinstance(v, list | tuple) else v for v in value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(args[0], v) for v in value)
        if len(value) != len(args):
            raise _Wrong
        return tuple(_parse(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict or hint is dict or origin is typing.Mapping:
        if isinstance(value, dict):
            return value
        raise _Wrong
    return value  # a type this parser does not know: the dataclass's check() judges it


def _kind(hint: Any, default: Any) -> str:
    """How a message names what ``hint`` accepts."""
    origin = typing.get_origin(hint)
    if origin is tuple or hint is tuple or isinstance(default, tuple):
        return f"a list like {list(default)}" if default not in (None, ()) else "a list"
    if origin is dict or isinstance(default, dict):
        return "a table"
    if origin in (typing.Union, types.UnionType):
        names = [getattr(a, "__name__", str(a)) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(names) + " (or left out)"
    return getattr(hint, "__name__", type(default).__name__)


def from_table(cls: type[T], data: Any, where: str, *, error: type[ValueError] = ValueError) -> T:
    """A frozen dataclass from a TOML table with strict keys and types (see the module doc).

    Raises ``error`` (a ValueError) naming the key; the dataclass's own ``check()`` raises its own."""
    if not isinstance(data, dict):
        raise error(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise error(f"unknown key(s) in [{where}]: {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = _hints(cls)
    default = cls()
    values = {}
    for key, value in data.items():
        want = getattr(default, key)
        hint = hints.get(key, type(want) if want is not None else Any)
        try:
            values[key] = _parse(hint, value)
        except _Wrong:
            raise error(f"{where}.{key} must be {_kind(hint, want)}, got {value!r}") from None
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check()
    return obj


def diff_dicts(old: Any, new: Any, prefix: str = "", *, fmt: str = "{path}: {old!r} -> {new!r}") -> list[str]:
    """What differs between two nested dicts (configs as JSON), one line per leaf: ``fmt`` with
    ``path`` (``section.key``), ``old`` and ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            out += diff_dicts(old.get(key), new.get(key), path, fmt=fmt)
        return out
    return [] if old == new else [fmt.format(path=prefix, old=old, new=new)]


__all__ = ["diff_dicts", "from_table"]
