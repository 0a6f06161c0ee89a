"""The integrity model of OUT: what a commit records, and the checks that readers, ``verify`` and a
re-run share (docs/output.md, "Integrity").

A commit (the end of a build, of an ``--append`` / ``--retry``, of a ``reweight``) writes every public
file first, then ``_state/build.json`` (the committed copy), then ``build.json``. build.json's
``files`` records every table, weight version, ``weights/active.json``, ``shards.json`` and the card:
its size, sha256 and, for parquet, its row count; a weight version also records the policy it was
solved with, so it can be solved again. ``shards.json`` records each shard's size and sha256, and so
does each shard's state marker (``_state/shards/``). Any one of them damaged, cut or changed
disagrees with the others and is named; what can be rebuilt from the rest is rebuilt by a re-run of
the build command (``pipelines/build/repair.py``).

Pure I/O through ``Layout``; no Ray, no pipeline code.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from groundwork import contract

from .layout import (
    DamagedFileError,
    Layout,
    first_line,
    json_bytes,
)

FILES = "files"  # build.json key: relative path -> {bytes, sha256[, rows][, policy]}
# build.json key: sha256 of build.json's own JSON without this key. A flipped digit in a count or a
# hand edit makes that copy unusable, and the other copy (build.json or _state/build.json) wins.
CHECKSUM = "checksum"
# The public files a commit records besides the weight versions (present ones only: the history
# exists after a retry, the plan after a build).
TABLES = (
    contract.MANIFEST,
    contract.REJECTS,
    contract.REJECTS_HISTORY,
    contract.SHARDS_JSON,
    contract.PLAN,
    contract.DATASET_CARD,
)
ACTIVE = f"{contract.WEIGHTS_DIR}/{contract.WEIGHTS_ACTIVE}"
_SHARD_KEYS = {"path": str, "samples": int, "bytes": int, "sha256": str}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def weight_file(name: str) -> str:
    """The relative path of weight version ``name`` (as build.json ``files`` names it)."""
    return f"{contract.WEIGHTS_DIR}/{name}.parquet"


# ---------------------------------------------------------------- reading the records


def check_build(data: Any, where: str) -> dict[str, Any]:
    """``data`` as build.json's shape (a dict with ``complete``, ``request`` and ``counts``), else DamagedFileError."""
    if not isinstance(data, dict):
        raise DamagedFileError(where, f"a JSON {type(data).__name__}, not build.json's object")
    for key, kind in (("complete", bool), ("request", dict), ("counts", dict)):
        if not isinstance(data.get(key), kind):
            raise DamagedFileError(where, f"no {key!r} {kind.__name__}: not a build.json")
    if not isinstance(data.get(FILES, {}), dict):
        raise DamagedFileError(where, f"{FILES!r} is not an object")
    if CHECKSUM in data and data[CHECKSUM] != self_checksum(data):
        raise DamagedFileError(where, "its checksum does not match its content (changed after the commit)")
    return data


def self_checksum(build: dict[str, Any]) -> str:
    """The sha256 build.json records of itself (its JSON without the ``checksum`` key)."""
    return digest(json_bytes({k: v for k, v in build.items() if k != CHECKSUM}))


def read_build(layout: Layout, path: str | None = None) -> dict[str, Any] | None:
    """build.json (or ``path``, e.g. the committed copy); None when absent, DamagedFileError when unreadable."""
    path = path or layout.build_json
    if not layout.exists(path):
        return None
    return check_build(layout.read_json(path), layout.display(path))


def _try_build(layout: Layout, path: str) -> tuple[dict[str, Any] | None, bytes | None, str | None]:
    """(record, its bytes, why it is unusable) of build.json or its copy."""
    if not layout.exists(path):
        return None, None, "missing"
    data = layout.read_bytes(path)
    try:
        record = check_build(json.loads(data), layout.display(path))
    except (ValueError, RecursionError) as exc:  # DamagedFileError is a ValueError
        why = exc.why if isinstance(exc, DamagedFileError) else f"not JSON: {first_line(exc)}"
        return None, data, "empty" if not data.strip() else why
    return record, data, None


def committed(layout: Layout) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(the committed build.json, what is wrong with its two copies: relative path -> why).

    The copy in ``_state`` is written before build.json, so after a kill between the two it is
    the newer one, and an edit of build.json leaves it as it was: the copy wins when it is sound.
    None (not finished) when neither is a complete build.
    """
    copy, copy_bytes, copy_why = _try_build(layout, layout.committed_copy)
    public, public_bytes, public_why = _try_build(layout, layout.build_json)
    problems: dict[str, str] = {}
    record = copy if copy is not None and copy.get("complete") else None
    if record is None and public is not None and public.get("complete"):
        record = public
        if copy_why != "missing" or FILES in public:  # a build from before the copy has none
            problems[layout.rel(layout.committed_copy)] = copy_why or "differs from build.json"
    if record is not None and public_bytes != json_bytes(record):
        problems[contract.BUILD_JSON] = public_why or "differs from the committed copy _state/build.json"
    return record, problems


def recorded_files(layout: Layout) -> dict[str, dict[str, Any]]:
    """The committed ``files`` for readers ({} for a build made before they were recorded, or none)."""
    record, _ = committed(layout)
    return dict((record or {}).get(FILES) or {})


def read_shards(layout: Layout, data: bytes | None = None) -> list[dict[str, Any]]:
    """shards.json's entries, each checked to be ``{path, samples, bytes, sha256}``; DamagedFileError otherwise."""
    where = layout.display(layout.shards_json)
    try:
        doc = json.loads(layout.read_bytes(layout.shards_json) if data is None else data)
    except (ValueError, RecursionError) as exc:
        raise DamagedFileError(where, f"not JSON: {first_line(exc)}") from None
    shards = doc.get("shards") if isinstance(doc, dict) else None
    if not isinstance(shards, list):
        raise DamagedFileError(where, "no 'shards' list: not a shards.json")
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict) or any(
            not isinstance(entry.get(k), t) or isinstance(entry.get(k), bool) for k, t in _SHARD_KEYS.items()
        ):
            raise DamagedFileError(where, f"entry {i} is not {{path, samples, bytes, sha256}}")
    return shards


# ---------------------------------------------------------------- recording a commit


def file_record(layout: Layout, rel: str) -> dict[str, Any]:
    """{bytes, sha256[, rows]} of OUT's file ``rel`` as it is now: hashed as a stream and the rows
    from the footer, so a manifest of millions of rows is never held whole (docs/scale.md)."""
    path = layout.path(rel)
    entry: dict[str, Any] = {"bytes": layout.size(path), "sha256": layout.sha256(path)}
    if rel.endswith(".parquet"):
        entry["rows"] = layout.parquet_rows(path)
    return entry


def record_files(layout: Layout, policies: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """build.json's ``files`` for OUT as it is now: every present table, the active marker and each
    weight version in ``policies`` (name -> the policy it was solved with, ``{"weights": {...}}``)."""
    files = {rel: file_record(layout, rel) for rel in TABLES if layout.exists(layout.path(rel))}
    if layout.exists(layout.weights_active):
        files[ACTIVE] = file_record(layout, ACTIVE)
    for name, policy in sorted(policies.items()):
        files[weight_file(name)] = {**file_record(layout, weight_file(name)), "policy": dict(policy)}
    return files


def commit(layout: Layout, build: dict[str, Any]) -> None:
    """Write build.json (with its own checksum): the committed copy first, then the file itself (module doc)."""
    data = json_bytes({**build, CHECKSUM: self_checksum(build)})
    layout.write_bytes(layout.committed_copy, data)
    layout.write_bytes(layout.build_json, data)


# ---------------------------------------------------------------- checks


def fault_of(entry: Mapping[str, Any], data: bytes | None, size: int | None = None) -> str | None:
    """What is wrong with a file against its record (None: it matches). ``data`` None: only the
    size (``size``, None = missing) is compared."""
    if data is None and size is None:
        return "missing"
    n = len(data) if data is not None else size
    if n != entry.get("bytes"):
        return f"{n} bytes, {entry.get('bytes')} recorded in build.json"
    if data is not None and digest(data) != entry.get("sha256"):
        return "sha256 differs from the one recorded in build.json (changed since the commit)"
    return None


def file_faults(layout: Layout, files: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Relative path -> what is wrong, for every recorded file that is missing, cut or changed."""
    wrong = {}
    for rel, entry in sorted(files.items()):
        path = layout.path(rel)
        size = layout.size(path)
        why = fault_of(entry, None, size)
        if why is None and layout.sha256(path) != entry.get("sha256"):  # a stream: flat memory
            why = "sha256 differs from the one recorded in build.json (changed since the commit)"
        if why:
            wrong[rel] = why
    return wrong


def check_bytes(layout: Layout, rel: str, data: bytes, files: Mapping[str, Mapping[str, Any]]) -> None:
    """DamagedFileError when ``data`` (OUT's file ``rel``, just read) is not what build.json recorded."""
    entry = files.get(rel)
    if entry is None:
        return
    why = fault_of(entry, data)
    if why:
        raise DamagedFileError(layout.display(layout.path(rel)), why)


def check_size(layout: Layout, rel: str, files: Mapping[str, Mapping[str, Any]]) -> None:
    """The cheap check of a file too large to hash on every read (the manifest, for the loader):
    its size against build.json (a cut, a swap); flipped bits are caught by the parquet page CRCs."""
    entry = files.get(rel)
    if entry is None:
        return
    size = layout.size(layout.path(rel))
    if size is None:
        raise FileNotFoundError(layout.display(layout.path(rel)))
    why = fault_of(entry, None, size)
    if why:
        raise DamagedFileError(layout.display(layout.path(rel)), why)


def read_parquet_bytes(layout: Layout, rel: str, data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A parquet file already read into memory (pages CRC-checked); DamagedFileError naming it."""
    with layout.parquet_faults(layout.path(rel)):
        return pq.read_table(io.BytesIO(data), columns=columns, page_checksum_verification=True)


__all__ = [
    "ACTIVE", "CHECKSUM", "FILES", "TABLES", "check_build", "check_bytes", "check_size", "commit", "committed", "digest",
    "fault_of", "file_faults", "file_record", "read_build", "read_parquet_bytes", "read_shards",
    "record_files", "recorded_files", "weight_file",
]  # fmt: skip
