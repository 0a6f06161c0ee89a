"""The ground floor's tools on their own: the one registry class (both instances agree), strict
config tables and their diffs, and the one atomic writer (complete or absent)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

from groundwork.configtable import diff_dicts, from_table
from groundwork.files import TMP_MARK, atomic_file, atomic_path, sha256_file, write_atomic
from groundwork.registry import Registry, UnknownNameError


@dataclass(frozen=True)
class _Info:
    name: str
    factory: Any
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Any = None


def _registry() -> Registry[_Info]:
    reg: Registry[_Info] = Registry("widget", _Info)

    def check(options: dict[str, Any]) -> None:
        if options["size"] <= 0:
            raise ValueError("size must be > 0")

    @reg.register("box", defaults={"size": 1.0, "label": None, "solid": True}, check=check)
    def box(weights: str | None, device: str, **options: Any) -> dict[str, Any]:
        return {"weights": weights, "device": device, **options}

    return reg


def test_registry_checks_options_before_building():
    reg = _registry()
    built = reg.create("box", weights="w.pt", size=2, label=3)
    # an int where a float is expected is a float; a None default takes a value of any type
    assert built == {"weights": "w.pt", "device": "cpu", "size": 2.0, "label": 3, "solid": True}
    assert isinstance(built["size"], float)
    with pytest.raises(TypeError, match=r"widget 'box' has no option\(s\) \['colour'\]"):
        reg.create("box", colour="red")
    with pytest.raises(ValueError, match="option solid must be bool, got 1"):
        reg.create("box", solid=1)
    with pytest.raises(ValueError, match="widget 'box': size must be > 0"):
        reg.create("box", size=0)
    with pytest.raises(UnknownNameError, match="unknown widget 'ball'; available: box"):
        reg.info("ball")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("box")(lambda **_: None)


def test_registry_discovers_entries_that_register_on_import():
    reg = _registry()
    calls = []

    def discover() -> None:  # as an import would: registers on the first call only
        calls.append(1)
        if len(calls) == 1:
            reg.register("late")(lambda **_: "late")

    reg.discover = discover
    assert reg.create("late") == "late"  # an unknown name looks again before it is an error
    assert reg.available() == ["box", "late"] and calls


def test_both_instances_accept_any_value_for_a_none_default():
    """The extractors and the scorers are one class now: the drift between their copies is gone."""
    import lineart
    from curation.scorers import registry as scorers

    assert type(lineart.EXTRACTORS) is type(scorers.SCORERS) is Registry
    with_none = [
        (reg, name, key)
        for reg in (lineart.EXTRACTORS, scorers.SCORERS)
        for name in reg.available()
        for key, value in reg.info(name).defaults.items()
        if value is None
    ]
    assert with_none, "no entry has a None default: nothing to compare"
    for reg, name, key in with_none:
        try:
            reg.check_options(name, {key: "any text"})
        except ValueError as exc:  # the entry's own check may refuse the value, never the type rule
            assert "must be NoneType" not in str(exc)


@dataclass(frozen=True)
class _Section:
    steps: int = 10
    rate: float = 0.5
    name: str = "a"
    on: bool = False
    size: tuple[int, int] = (64, 64)
    tags: tuple[str, ...] = ()
    limit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def test_config_tables_are_strict():
    got = from_table(
        _Section, {"rate": 1, "size": [32, 48], "tags": ["x"], "limit": 3, "extra": {"k": 1}}, "s"
    )
    assert got == _Section(rate=1.0, size=(32, 48), tags=("x",), limit=3.0, extra={"k": 1})
    for table, message in [
        ({"stpes": 1}, r"unknown key\(s\) in \[s\]: stpes; known: steps, rate"),
        ({"steps": 1.5}, "s.steps must be int, got 1.5"),
        ({"steps": True}, "s.steps must be int, got True"),
        ({"on": 1}, "s.on must be bool, got 1"),
        ({"size": [1, 2, 3]}, r"s.size must be a list like \[64, 64\], got \[1, 2, 3\]"),
        ({"limit": "x"}, "s.limit must be float .or left out., got 'x'"),
        ({"extra": 3}, "s.extra must be a table, got 3"),
    ]:
        with pytest.raises(ValueError, match=message):
            from_table(_Section, table, "s")
    with pytest.raises(ValueError, match=r"\[s\] must be a table, got list"):
        from_table(_Section, [], "s")


def test_config_diffs_name_each_leaf():
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    new = {"a": {"b": 2, "c": [1, 2]}, "e": True}
    assert diff_dicts(old, new) == ["a.b: 1 -> 2", "d: 'x' -> None", "e: None -> True"]
    assert diff_dicts(old, old) == []
    assert diff_dicts(old, new, fmt="{path}={new}") == ["a.b=2", "d=None", "e=True"]


def test_atomic_writes_are_complete_or_absent(tmp_path):
    target = str(tmp_path / "sub" / "file.bin")
    write_atomic(target, b"first")
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b"half of the second")
        raise RuntimeError("killed half-way")
    assert open(target, "rb").read() == b"first"
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".png") as tmp:
        assert tmp.endswith(".png") and TMP_MARK in tmp
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("killed half-way")
    assert open(target, "rb").read() == b"first"
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"second")
    assert open(target, "rb").read() == b"second"
    assert os.listdir(os.path.dirname(target)) == ["file.bin"]  # no temporary file left behind
    assert sha256_file(target) == hashlib.sha256(b"second").hexdigest()
