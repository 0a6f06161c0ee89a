"""Arrow column helpers for the driver-side phases: no per-sample Python objects.

Parquet files are read and written one row group / one part at a time, so the driver's memory is
bounded by a part, not by the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundwork.files import atomic_file
from sharding.layout import PARQUET_WRITE, Layout

ROW_GROUP = 8192  # rows per row group of plan / manifest / rejects: the unit the driver reads back


def codes(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """(int32 code per row, distinct values): a string column as small integers. Nulls get a code too."""
    encoded = pa.chunked_array(column).combine_chunks().dictionary_encode(null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32), encoded.dictionary.to_pylist()


def labels(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Object array of a string column that shares one Python string per distinct value (8 B a row)."""
    code, names = codes(column)
    table = np.empty(len(names), dtype=object)
    table[:] = names
    return table[code]


def ranks(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Rank of each value in the column's sort order (stable): sorts like the Python strings do."""
    order = pc.sort_indices(column).to_numpy()
    out = np.empty(len(order), np.int64)
    out[order] = np.arange(len(order))
    return out


def concat_lists(columns: Sequence[pa.Array | pa.ChunkedArray]) -> pa.ListArray:
    """Row-wise concatenation of list columns (row i = columns[0][i] + columns[1][i] + ...); null = []."""
    arrays = [pa.chunked_array(c).combine_chunks() for c in columns]
    n = len(arrays[0]) if arrays else 0
    parents, values = [], []
    for arr in arrays:
        parents.append(pc.list_parent_indices(arr).to_numpy().astype(np.int64))
        values.append(pc.list_flatten(arr))
    parent = np.concatenate(parents) if parents else np.zeros(0, np.int64)
    order = np.argsort(parent, kind="stable")  # by row; within a row, column order, then list order
    flat = pa.chunked_array(values, type=arrays[0].type.value_type).combine_chunks().take(pa.array(order))
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(parent, minlength=n), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def give_back_memory() -> None:
    """Return freed memory to the OS between a phase's steps: Arrow's allocator keeps freed buffers
    and glibc's heap keeps freed small blocks (numpy's per-part arrays), so the process's peak would
    otherwise be the sum of its steps, not the largest of them (docs/scale.md: the 1M plan's peak
    1215 -> 1022 MB)."""
    import ctypes
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): Arrow's release is all there is
        pass


def parquet_batches(layout: Layout, path: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The file's row groups as tables, one at a time (ranged reads on an object store)."""
    f = layout.parquet_file(path)  # pages CRC-checked; a damaged file is a DamagedFileError naming it
    try:
        for i in range(f.num_row_groups):
            with layout.parquet_faults(path):
                group = f.read_row_group(i, columns=columns)
            yield group
    finally:
        f.close()


@contextmanager
def atomic_parquet(layout: Layout, path: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter whose file appears at ``path`` complete or not at all (``groundwork.files``)."""
    with atomic_file(path, layout.fs) as fh:
        writer = pq.ParquetWriter(fh, schema, **PARQUET_WRITE)
        try:
            yield writer
        finally:
            writer.close()


def bucket_labels(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """``"{bucket_w}x{bucket_h}"`` per row: the one spelling of a bucket in counts and reports."""
    return pc.binary_join_element_wise(
        pc.cast(table["bucket_w"], pa.string()), pc.cast(table["bucket_h"], pa.string()), "x"
    )
