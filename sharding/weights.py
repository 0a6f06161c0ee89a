"""Weight versions of a build: ``OUT/weights/<name>.parquet``, one of them marked active.

Shards and the manifest hold only facts that never change; a sample's weight, tier and factors
depend on the policy and on the population (an append moves every quantile), so they live here,
one row per manifest row in manifest order, and a new version never touches a shard.
Readers go through ``read_version`` (the loader, the audit, verify); writers through
``write_version`` / ``set_active`` (the build and ``linepairs reweight``). File names are
``sharding.layout``'s.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .integrity import check_bytes, read_parquet_bytes, recorded_files, weight_file
from .layout import PARQUET_WRITE, WEIGHTS_ACTIVE, WEIGHTS_DIR, DamagedFileError, Layout

FIRST_VERSION = "v1"  # what the build writes
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_META_KEY = b"linepairs.weights"  # parquet key-value metadata: the policy the version was solved with

WEIGHTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),  # the manifest row's key (same order as manifest.parquet)
        pa.field("weight", pa.float64()),  # = clip(tier_weight * tag_factor * source_factor); mean 1
        pa.field("tier", pa.string()),
        pa.field("quality", pa.float64()),  # quantile of the quality score in its scope; null = unscored
        pa.field("tier_weight", pa.float64()),
        pa.field("tag_factor", pa.float64()),
        pa.field("source_factor", pa.float64()),
    ]
)


class WeightsVersionError(ValueError):
    """A weight version that is missing, misnamed or does not match the manifest."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".json"):
        raise WeightsVersionError(
            f"weight version name {name!r}: use letters, digits, '_', '-', '.' (at most 64, not starting with a dot)"
        )
    return name


def list_versions(layout: Layout) -> list[str]:
    """Names of every stored version, sorted."""
    selector = pafs.FileSelector(layout.weights_dir, allow_not_found=True)
    infos = layout.fs.get_file_info(selector)
    names = [i.base_name[: -len(".parquet")] for i in infos if i.base_name.endswith(".parquet")]
    return sorted(n for n in names if _NAME.match(n))


def active_name(layout: Layout) -> str:
    try:
        return check_name(layout.read_json(layout.weights_active)["name"])
    except FileNotFoundError:
        why = "missing"
    except (DamagedFileError, KeyError, TypeError, WeightsVersionError) as exc:
        why = exc.why if isinstance(exc, DamagedFileError) else 'not {"name": VERSION}'
    stored = list_versions(layout)
    if not stored:  # contract 1 kept weights in the manifest and has no weights/ at all
        raise WeightsVersionError(
            f"no weight version in {layout.out} ({WEIGHTS_DIR}/ is empty): a build of contract 1 has none; rebuild it"
        )
    name = FIRST_VERSION if FIRST_VERSION in stored else stored[0]
    raise WeightsVersionError(
        f"{WEIGHTS_DIR}/{WEIGHTS_ACTIVE} is {why}; make a stored version ({', '.join(stored)}) the active "
        f"one: `linepairs reweight {layout.out} --name {name} --activate` (or re-run the build command, "
        "which restores the recorded one)"
    )


def read_version(
    layout: Layout, name: str | None = None, keys: pa.ChunkedArray | pa.Array | None = None,
    *, recorded: bool = True,
) -> tuple[str, pa.Table, dict[str, Any]]:  # fmt: skip
    """(name, table, metadata) of version ``name`` (None: the active one).

    With ``keys`` (the manifest's key column) the rows are checked to be the manifest's, in order.
    ``recorded`` False: not checked against build.json (a commit reading what it just wrote).
    """
    name = active_name(layout) if name is None else check_name(name)
    rel = weight_file(name)
    try:
        data = layout.read_bytes(layout.weights_version(name))
    except FileNotFoundError:
        have = ", ".join(list_versions(layout)) or "none"
        raise WeightsVersionError(f"no weight version {name!r} (have: {have})") from None
    try:
        # The version is read whole anyway: its sha256 against build.json's record costs nothing
        # more, and catches a version rewritten to other weights (docs/output.md, "Integrity").
        if recorded:
            check_bytes(layout, rel, data, recorded_files(layout))
        table = read_parquet_bytes(layout, rel, data)
    except DamagedFileError as exc:
        raise WeightsVersionError(
            f"{exc}; re-run the build command to solve it again from its recorded policy"
        ) from None
    missing = [f.name for f in WEIGHTS_SCHEMA if f.name not in table.column_names]
    if missing:
        raise WeightsVersionError(f"weight version {name!r} lacks column(s) {', '.join(missing)}")
    if keys is not None and not table["key"].equals(pa.chunked_array(keys).cast(pa.string())):
        raise WeightsVersionError(
            f"weight version {name!r} does not match the manifest ({table.num_rows} rows for "
            f"{len(keys)} samples, or keys in another order); solve it again with `linepairs reweight`"
        )
    raw = (table.schema.metadata or {}).get(_META_KEY)
    return name, table.select(WEIGHTS_SCHEMA.names), json.loads(raw) if raw else {}


def encode_version(table: pa.Table, meta: dict[str, Any]) -> bytes:
    """The parquet bytes of one version (``meta``: its policy, kept in the file)."""
    table = table.select(WEIGHTS_SCHEMA.names).cast(WEIGHTS_SCHEMA)
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_WRITE)
    return buf.getvalue()


def write_version(layout: Layout, name: str, table: pa.Table, meta: dict[str, Any]) -> None:
    layout.write_bytes(layout.weights_version(check_name(name)), encode_version(table, meta))


def set_active(layout: Layout, name: str) -> None:
    layout.write_json(layout.weights_active, {"name": check_name(name)})


__all__ = [
    "FIRST_VERSION",
    "WEIGHTS_SCHEMA",
    "WeightsVersionError",
    "active_name",
    "check_name",
    "encode_version",
    "list_versions",
    "read_version",
    "set_active",
    "write_version",
]
