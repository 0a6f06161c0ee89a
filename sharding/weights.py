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

from .layout import WEIGHTS_ACTIVE, WEIGHTS_DIR, Layout

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
    except (FileNotFoundError, OSError, KeyError, TypeError, ValueError) as exc:
        raise WeightsVersionError(
            f"no active weight version ({WEIGHTS_DIR}/{WEIGHTS_ACTIVE}: {type(exc).__name__}); a build of "
            "contract 1 has none: rebuild it"
        ) from None


def read_version(
    layout: Layout, name: str | None = None, keys: pa.ChunkedArray | pa.Array | None = None
) -> tuple[str, pa.Table, dict[str, Any]]:
    """(name, table, metadata) of version ``name`` (None: the active one).

    With ``keys`` (the manifest's key column) the rows are checked to be the manifest's, in order.
    """
    name = active_name(layout) if name is None else check_name(name)
    try:
        table = layout.read_parquet(layout.weights_version(name))
    except (FileNotFoundError, OSError) as exc:
        have = ", ".join(list_versions(layout)) or "none"
        raise WeightsVersionError(
            f"no weight version {name!r} (have: {have}): {type(exc).__name__}"
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
    pq.write_table(table, buf, compression="zstd")
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
