"""Check a finished build against its own records: shards.json, the manifest, every tar member and
every weight version."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import tarfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from groundwork.contract import IMAGE_EXTS, TXT_SINCE_CONTRACT, drawing_member, sample_member

from .captions import caption
from .integrity import FILES, committed, file_faults, read_shards, weight_file
from .layout import READ_BLOCK, WEIGHTS_ACTIVE, WEIGHTS_DIR, DamagedFileError, Layout, StorageError
from .samplejson import tags_of
from .weights import WeightsVersionError, active_name, list_versions, read_version

MEMBER_MAX_BYTES = 256 * 1024 * 1024  # far above any bucket's image or drawing
VERIFY_THREADS = 4  # shards checked at once


def _decode(data: bytes | None) -> Image.Image:
    if data is None:
        raise ValueError("member too large to read")
    im = Image.open(io.BytesIO(data))
    if im.size[0] * im.size[1] > 1 << 28:  # a header claiming a huge picture is not decoded
        raise ValueError(f"claims {im.size[0]}x{im.size[1]} pixels")
    im.load()
    return im


class _HashingReader:
    """A forward-only reader that hashes and counts every byte it passes on: the shard is read
    once, for its sha256 and its members together."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n) if n is not None and n >= 0 else self.raw.read()
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(READ_BLOCK):
            pass


def verify_shard(
    out: Layout | str,
    entry: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    contract: int = TXT_SINCE_CONTRACT,
) -> list[str]:
    """Faults of one shard; ``rows`` are its manifest rows by key; ``contract``: the build's (a
    ``txt`` caption member from 4 on). The tar is read once, as a stream (its sha256 and size come
    from the same bytes the members do)."""
    layout = out if isinstance(out, Layout) else Layout(out)
    rel = entry["path"]
    path = layout.shard(rel)
    if layout.size(path) is None:
        return [f"{rel}: missing"]
    faults: list[str] = []
    # Stream: a sample's members are adjacent in the tar, so each sample is checked as soon as its
    # last member is read and only one sample is in memory; a member over MEMBER_MAX_BYTES is a
    # fault and is never kept (a 7 MB shard can claim a 1.5 GiB member).
    seen: set[str] = set()
    current: tuple[str | None, dict[str, bytes | None]] = (None, {})

    def finish() -> None:
        key, files = current
        if key is None:
            return
        if key in seen:
            faults.append(f"{rel}: sample {key} appears twice (its members are not adjacent)")
        seen.add(key)
        if key not in rows:
            faults.append(f"{rel}: sample {key} is not in the manifest")
        else:
            faults.extend(_check_sample(rel, key, files, rows[key], contract >= TXT_SINCE_CONTRACT))

    unreadable = None
    with layout.fs.open_input_stream(path) as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for info in tar:
                    if not info.isfile():
                        faults.append(f"{rel}: member {info.name} is not a regular file")
                        continue
                    member = sample_member(info.name)
                    if member is None:
                        faults.append(f"{rel}: unexpected member name {info.name!r}")
                        continue
                    key, ext = member
                    if key != current[0]:
                        finish()
                        current = (key, {})
                    if info.size > MEMBER_MAX_BYTES:
                        faults.append(
                            f"{rel}: member {info.name} is {info.size} bytes (> {MEMBER_MAX_BYTES}), not read"
                        )
                        current[1][ext] = None
                        continue  # the stream skips it block by block, never whole in memory
                    current[1][ext] = tar.extractfile(info).read()
                finish()
        except (tarfile.TarError, OSError, EOFError) as exc:
            unreadable = f"{rel}: unreadable tar ({exc})"
        reader.drain()  # the end-of-archive padding counts in the size and the sha256
    head = []
    if reader.size != entry["bytes"]:
        head.append(f"{rel}: {reader.size} bytes, shards.json says {entry['bytes']}")
    if reader.digest.hexdigest() != entry["sha256"]:
        head.append(f"{rel}: sha256 differs from shards.json")
    faults = head + faults
    if unreadable:
        return faults + [unreadable]
    if len(seen) != entry["samples"]:
        faults.append(f"{rel}: {len(seen)} samples, shards.json says {entry['samples']}")
    for key in sorted(set(rows) - seen):
        faults.append(f"{rel}: manifest sample {key} is missing from the shard")
    return faults


def _check_sample(
    rel: str, key: str, files: dict[str, bytes | None], row: dict[str, Any], txt: bool
) -> list[str]:
    faults = []
    where = f"{rel}: {key}"
    image_ext = next((e for e in IMAGE_EXTS if e in files), None)
    expected = {"json", *(drawing_member(x) for x in row["extractors"]), *(["txt"] if txt else [])}
    missing = sorted(expected - set(files)) + ([] if image_ext else ["jpg|webp"])
    if missing:
        faults.append(f"{where}: missing {', '.join(missing)}")
    extra = sorted(set(files) - expected - {image_ext})
    if extra:
        faults.append(f"{where}: unexpected member(s) {', '.join(extra)}")
    size = (row["bucket_w"], row["bucket_h"])
    if image_ext:
        try:
            im = _decode(files[image_ext])
            if im.size != size:
                faults.append(
                    f"{where}: illustration is {im.size[0]}x{im.size[1]}, bucket is {size[0]}x{size[1]}"
                )
        except Exception as exc:  # noqa: BLE001 - Pillow on untrusted bytes: any decoder failure is a fault to report, not a crash
            faults.append(f"{where}: illustration does not decode ({exc})")
    for name in row["extractors"]:
        data = files.get(drawing_member(name))
        if data is None:
            continue
        try:
            im = _decode(data)
            if im.size != size or im.mode != "L":
                faults.append(
                    f"{where}: {drawing_member(name)} is {im.size[0]}x{im.size[1]} {im.mode}, want {size} L"
                )
        except Exception as exc:  # noqa: BLE001 - Pillow on untrusted bytes: any decoder failure is a fault to report
            faults.append(f"{where}: {drawing_member(name)} does not decode ({exc})")
    if "json" in files:
        try:
            meta = json.loads(files["json"])
            stale = sorted({"weight", "tier", "quality"} & set(meta))
            if stale:  # contract 2: weights live in weight versions only
                faults.append(f"{where}: json holds weight fields {', '.join(stale)}")
            if meta.get("key") != key:
                faults.append(f"{where}: json key {meta.get('key')!r} != {key!r}")
            if txt and files.get("txt") is not None:
                prose = meta.get("caption")
                want = caption(tags_of(meta), prose=prose if isinstance(prose, str) else None).text
                if files["txt"].decode("utf-8", "replace") != want:
                    faults.append(f"{where}: txt is not the caption of its json's tags")
        except (ValueError, TypeError, AttributeError) as exc:
            faults.append(f"{where}: json does not parse ({exc})")
    return faults


def verify_weights(layout: Layout, keys: pa.ChunkedArray) -> list[str]:
    """Every weight version matches the manifest row for row, has usable weights; one is active."""
    faults = []
    names = list_versions(layout)
    if not names:
        return [f"{WEIGHTS_DIR}/: no weight version"]
    try:
        active = active_name(layout)
        if active not in names:
            faults.append(f"{WEIGHTS_DIR}/{WEIGHTS_ACTIVE}: active version {active!r} is not stored")
    except WeightsVersionError as exc:
        faults.append(str(exc))
    for name in names:
        try:
            # recorded=False: the record is checked by record_faults; here what the file holds
            _, table, _ = read_version(layout, name, keys=keys, recorded=False)
        except WeightsVersionError as exc:
            faults.append(f"{WEIGHTS_DIR}/{name}.parquet: {exc}")
            continue
        w = table["weight"].to_numpy(zero_copy_only=False)
        with np.errstate(over="ignore"):
            total = w.sum()
        if len(w) and (not np.all(np.isfinite(w)) or np.any(w < 0) or not 0 < total < np.inf):
            faults.append(f"{WEIGHTS_DIR}/{name}.parquet: weights must be finite, >= 0 and not all 0")
        elif len(w) and abs(w.mean() - 1) > 1e-6:
            faults.append(f"{WEIGHTS_DIR}/{name}.parquet: mean weight {w.mean():.6g}, want 1")
    return faults


def record_faults(layout: Layout) -> list[str]:
    """OUT's files against what build.json recorded at the last commit (sizes, sha256), build.json
    against its committed copy, and unrecorded weight versions (docs/output.md, "Integrity")."""
    record, problems = committed(layout)
    faults = [f"{rel}: {why}" for rel, why in sorted(problems.items())]
    files = (record or {}).get(FILES)
    if not files:  # a build from before the records (or no finished build: reported by the caller)
        return faults
    faults += [f"{rel}: {why}" for rel, why in file_faults(layout, files).items()]
    for name in list_versions(layout):
        if weight_file(name) not in files:
            faults.append(
                f"{weight_file(name)}: not recorded in build.json (left by a reweight killed before it "
                "finished? run that reweight again)"
            )
    return faults


def state_faults(layout: Layout, shards: list[dict[str, Any]]) -> list[str]:
    """shards.json against the shards' state markers (``_state/shards/``, when OUT still has them):
    a shard replaced together with its shards.json entry still disagrees with its marker."""
    present = set(layout.listed_sizes(layout.shard_states_dir))
    if not present:
        return []
    faults = []
    for entry in shards:
        marker = layout.shard_state(entry["path"])
        if marker not in present:
            faults.append(f"{entry['path']}: no state marker {layout.rel(marker)}")
            continue
        try:
            stats = layout.read_json(marker).get("stats")
        except (DamagedFileError, AttributeError) as exc:
            faults.append(f"{layout.rel(marker)}: {exc}")
            continue
        if stats != entry:
            faults.append(
                f"{entry['path']}: shards.json says {entry.get('bytes')} bytes, sha256 "
                f"{str(entry.get('sha256'))[:12]}..., its state marker {stats and stats.get('bytes')} bytes, "
                f"sha256 {str(stats and stats.get('sha256'))[:12]}..."
            )
    return faults


def verify_build(out: Layout | str) -> list[str]:
    """Every fault found in OUT (a path or URL); an empty list means the build is sound."""
    layout = out if isinstance(out, Layout) else Layout(out)
    for path in (layout.shards_json, layout.manifest):
        if layout.size(path) is None:
            return [f"{layout.out}: no {layout.rel(path)} (not a finished build)"]
    faults = record_faults(layout)
    try:
        shards = read_shards(layout)
        manifest = layout.read_parquet(
            layout.manifest,
            columns=["key", "shard", "bucket_w", "bucket_h", "extractors"],
        )
    except DamagedFileError as exc:  # nothing below can be checked against a table that cannot be read
        return faults + [str(exc)]
    faults += state_faults(layout, shards)
    faults += verify_weights(layout, manifest["key"])
    build, _ = committed(layout)
    contract = int((build or {}).get("contract", TXT_SINCE_CONTRACT))
    counts = pc.value_counts(manifest["key"])
    for key in pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1)).to_pylist():
        faults.append(f"manifest: key {key} appears twice")
    # Rows grouped by shard as index arrays: only the shard being checked becomes Python rows, so
    # memory stays flat at Danbooru scale (a Python dict per manifest row would not).
    codes = pc.dictionary_encode(manifest["shard"]).combine_chunks()
    names = codes.dictionary.to_pylist()
    order = np.argsort(codes.indices.to_numpy(zero_copy_only=False), kind="stable")
    bounds = np.searchsorted(codes.indices.to_numpy(zero_copy_only=False)[order], np.arange(len(names) + 1))
    rows_of = {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(names)}
    listed = {e["path"] for e in shards}
    for shard in sorted(set(rows_of) - listed):
        faults.append(f"manifest: shard {shard} is not in shards.json")

    def check(entry: dict[str, Any]) -> list[str]:
        taken = manifest.take(pa.array(rows_of.get(entry["path"], np.zeros(0, np.int64)))).to_pylist()
        try:
            return verify_shard(layout, entry, {r["key"]: r for r in taken}, contract)
        except StorageError as exc:  # a shard path leaving OUT is a fault, and is not opened
            return [f"shards.json: {exc}"]

    # a few shards at a time: a store's latency, not the CPU, bounds one reader
    with concurrent.futures.ThreadPoolExecutor(VERIFY_THREADS) as pool:
        for found in pool.map(check, shards):
            faults += found
    return faults


def sample_count(out: Layout | str) -> int:
    """Samples in the manifest (a finished build that kept nothing has 0)."""
    layout = out if isinstance(out, Layout) else Layout(out)
    return layout.parquet_rows(layout.manifest)
