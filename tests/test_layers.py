"""The floors of the house, read from the code: every import (module level and lazy imports inside
functions alike, through ``ast``) goes down a floor or stays in its own package, and no files import
each other in a circle. The allowed order is written once, here (docs/architecture.md draws it).
"""

from __future__ import annotations

import ast
import os
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom up. A package imports only its own modules and packages on lower floors; packages on one
# floor stand side by side and never import each other.
FLOORS = (
    ("groundwork",),  # general tools: config tables, registry, checkpoints, files, filesystems
    ("curation", "lineart"),  # what an input is and is worth; line drawings
    ("sharding",),  # OUT: layout, plan, shards, integrity, verify, the loader
    ("wnet",),  # the W-net: reads shards only through sharding
    ("pipelines",),  # the build on Ray, the post-build tools, the commands, the benches
)
# The owners of Ray: every ray import (tasks, actor pools, Ray Data; the cluster; Ray Train).
RAY_OWNERS = ("pipelines.distribute", "pipelines.raycluster", "pipelines.raytrain")
# wnet reads a build only through sharding (the loader, the layout): never a tar or a shard format.
WNET_NEVER = ("tarfile", "webdataset")

FLOOR = {pkg: n for n, floor in enumerate(FLOORS) for pkg in floor}


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {}
    for pkg in FLOOR:
        for folder, _, names in os.walk(os.path.join(REPO, pkg)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module ``name`` lives in (``a.b.c`` -> ``a.b.c``, else ``a.b``, ...), None if outside."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> list[tuple[str, int]]:
    """(imported name, line) of every import in ``module``: project modules resolved to their file's
    module (``from a.b import c`` is a.b.c when c is a module), other names as written."""
    path = MODULES[module]
    is_pkg = path.endswith("__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(_target(a.name) or a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: None if is_pkg else -1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                out.append((_target(full) or _target(base) or base, node.lineno))
    return out


def _file(module: str) -> str:
    return os.path.relpath(MODULES[module], REPO)


def _package(module: str) -> str:
    return module.split(".")[0]


EDGES = {m: imports_of(m) for m in MODULES}


def test_no_import_goes_up_a_floor_or_across_one():
    wrong = []
    for module, names in EDGES.items():
        here = _package(module)
        for name, line in names:
            there = _package(name)
            if there in FLOOR and there != here and FLOOR[there] >= FLOOR[here]:
                how = "up a floor" if FLOOR[there] > FLOOR[here] else "across its floor"
                wrong.append(f"{_file(module)}:{line}: {module} imports {name} ({how})")
    assert not wrong, "\n".join(wrong)


def test_only_the_distributor_imports_ray():
    wrong = [
        f"{_file(m)}:{line}: {m} imports {name}"
        for m, names in EDGES.items()
        for name, line in names
        if name.split(".")[0] == "ray" and m not in RAY_OWNERS
    ]
    assert not wrong, "\n".join(wrong)


def test_wnet_reads_shards_only_through_sharding():
    wrong = [
        f"{_file(m)}:{line}: {m} imports {name}"
        for m, names in EDGES.items()
        if _package(m) == "wnet"
        for name, line in names
        if name.split(".")[0] in WNET_NEVER
    ]
    assert not wrong, "\n".join(wrong)


def circles() -> list[list[str]]:
    """Strongly connected groups of more than one file (Tarjan, iterative)."""
    graph = {m: sorted({n for n, _ in EDGES[m] if n in MODULES and n != m}) for m in MODULES}
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def _describe(group: list[str]) -> str:
    """A circle as its imports: ``file:line: module imports module`` for each tie inside it."""
    ties = sorted(
        {
            f"{_file(m)}:{line}: {m} imports {name}"
            for m in group
            for name, line in EDGES[m]
            if name in group and name != m
        }
    )
    return "circle of " + ", ".join(group) + ":\n  " + "\n  ".join(ties)


def test_no_files_import_each_other_in_a_circle():
    wrong = circles()
    assert not wrong, "\n".join(_describe(g) for g in wrong)


def test_every_package_has_a_floor():
    """A package the floors do not name would escape every check here."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        include = tomllib.load(fh)["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(p.rstrip("*") for p in include) == sorted(FLOOR)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from sharding.layout import Layout\n", ["sharding.layout"]),
        ("def f():\n    from pipelines.distribute import pool_shape\n", ["pipelines.distribute"]),
        ("def f():\n    from ..sharding import layout\n", ["sharding.layout"]),
        ("def f():\n    import ray.train.torch\n", ["ray.train.torch"]),
        ("import ray.data\n", ["ray.data"]),
    ],
)
def test_imports_are_read_lazy_ones_included(tmp_path, monkeypatch, source, expected):
    """The reader itself: a lazy import inside a function counts like one at the top."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "curation.probe", str(path))
    assert [name for name, _ in imports_of("curation.probe")] == expected
