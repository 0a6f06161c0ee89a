"""Archives read in place: ``.tar`` (with the hfutils ``NNNN.json`` index when one lies beside it),
``.tar.gz`` / ``.tgz`` and ``.zip``; their members grouped into samples the WebDataset way.

Nothing is extracted: a member is a location (``tar://``, ``tgz://``, ``zip://``) that
``curation.fetch.read_location`` reads with its byte cap, so a member named ``../x.jpg``, an
absolute name or a link member can never touch the file system (they are ``unsafe_member`` rejects).
An archive or index file gets the metadata-file policy (``common.metadata_refusal``): one that links
out of the source or is not a regular file (a FIFO named ``0000.tar``) is one reject row, never
opened; local archives are opened through ``open_regular``.

Costs (docs/sources.md): a ``.tar`` is listed from its headers (one small read each; on a store one
ranged GET each) or, when ``NAME.json`` is its hfutils index, from that one file, checked against
the tar (size, and the header of its first and last member); a member is then one ranged read. A
``.zip`` is listed from its central directory and a member is one ranged read plus its
decompression. A ``.tar.gz`` can only be read from its start: listing it is one full decompression,
and reading a member decompresses from the start of the archive (or from the member read last in
the same process, when that comes earlier): cheap in the scan, which reads an archive's members in
order, but up to one pass per sample in materialize, so unpack a large one (``gunzip``) first.

Samples (the WebDataset rule, tars): a member's key is its name up to the first dot of its base
name (``a/b/123.lineart.canny.png`` -> key ``a/b/123``, suffix ``lineart.canny.png``). The single
suffix image member (``123.jpg``) is the sample's image; ``json`` / ``txt`` / ``caption`` /
``tags`` members of the key are its metadata (sidecars); any other member (a linepairs line drawing,
a ``.cls``, an ``.npy``) is counted by suffix and reported once. Zips follow the folder rule instead
(kohya folders zipped: the key is the name up to the last dot), since nothing writes WebDataset zips.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import posixpath
import stat
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

from ..address import quote_path, tar_location
from ..records import Record
from ..storage import SourceStorage, is_remote, relpath, storage_or_default
from .common import IMAGE_EXTS, NOT_STILL_EXTS, metadata_refusal, open_regular, walk_files

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
SIDECAR_SUFFIXES = ("json", "txt", "caption", "tags")
POST_FILE_EXTS = IMAGE_EXTS | NOT_STILL_EXTS  # a single-suffix member that is a post's file
INDEX_MAX_BYTES = 256 << 20  # an hfutils index lists ~100 bytes per member
BIG_TGZ = 256 << 20  # a .tar.gz over this gets a one-line note: unpack it


def archive_type(path: str) -> str | None:
    """``tar``, ``tgz`` or ``zip`` from the name; None for anything else."""
    lower = path.lower()
    if lower.endswith(".tar"):
        return "tar"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tgz"
    if lower.endswith(".zip"):
        return "zip"
    return None


def archives_below(root: str, storage: SourceStorage | None = None) -> list[str]:
    """Every file named as an archive below ``root`` (sorted; folder links not followed, see
    walk_files). A link out or a FIFO among them is kept: ``list_archive`` makes its reject row."""
    return [p for p in walk_files(root, storage) if archive_type(p)]


def split_key(name: str, rule: str = "webdataset") -> tuple[str, str]:
    """(key, suffix) of a member name: WebDataset's rule (first dot of the base name) or the
    folder rule (last dot)."""
    folder, _, base = name.rpartition("/")
    if rule == "webdataset":
        stem, dot, suffix = base.partition(".")
    else:
        stem, dot, suffix = base.rpartition(".")
        if not dot:
            stem, suffix = base, ""
    if not stem:  # ".hidden" -> no key
        return "", suffix
    return (f"{folder}/{stem}" if folder else stem), suffix.lower()


@dataclass(frozen=True)
class Member:
    archive: str  # absolute path or URL of the archive
    name: str  # member name as stored
    size: int
    location: str  # what read_location reads


@dataclass
class Sample:
    """The members of one key: its image (or other post file) and its sidecars by suffix."""

    archive: str
    key: str
    image: Member | None = None
    sidecars: dict[str, Member] = field(default_factory=dict)


@dataclass
class Listing:
    """What listing some archives found: members, and everything that is not a usable member."""

    members: list[Member] = field(default_factory=list)
    problems: list[Record] = field(default_factory=list)  # unsafe members, cut or unreadable archives
    notes: list[str] = field(default_factory=list)  # one line each (a stale index, a big .tar.gz)


def unsafe_name(name: str) -> str | None:
    """Why a member name must not be read (None when it is a plain, contained path)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return f"absolute member path {name!r}"
    if ".." in norm.split("/") or posixpath.normpath(norm).startswith(".."):
        return f"member path {name!r} leaves the archive's folder"
    if any(ord(c) < 32 for c in name):
        return f"member path {name!r} has control characters"
    return None


def unsafe_reason(info: tarfile.TarInfo) -> str | None:
    """Why a tar member must not be read as an image (None when it is a plain, contained file)."""
    if info.issym() or info.islnk():
        return f"link member {info.name!r} -> {info.linkname!r}"
    if not info.isfile():
        return f"member {info.name!r} is not a regular file (type {info.type!r})"
    return unsafe_name(info.name)


def _refused_member(source: str, rel: str, info: tarfile.TarInfo, out: Listing) -> bool:
    """An unsafe member (``unsafe_reason``) becomes one ``unsafe_member`` reject row in ``out``."""
    reason = unsafe_reason(info)
    if reason is not None:
        out.problems.append(
            Record(source, f"{rel}:{info.name}", None, reject_reason="unsafe_member", reject_detail=reason)
        )
    return reason is not None


def _where_of(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def list_archive(source: str, path: str, root: str, storage: SourceStorage | None = None) -> Listing:
    """The regular-file members of one archive; problems become records (never an exception)."""
    out = Listing()
    rel = relpath(path, root)
    refused = metadata_refusal(path, root, storage)  # a link out of the source, a FIFO: never opened
    if refused is not None:
        out.problems.append(
            Record(source, rel, None, reject_reason=refused.reason, reject_detail=str(refused)[:300])
        )
        return out
    kind = archive_type(path)
    try:
        if kind == "tar":
            _list_tar(source, path, rel, root, storage, out)
        elif kind == "tgz":
            _list_tgz(source, path, rel, storage, out)
        elif kind == "zip":
            _list_zip(source, path, rel, storage, out)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        out.problems.append(
            Record(
                source,
                rel,
                None,
                reject_reason="bad_archive",
                reject_detail=f"{type(exc).__name__}: {exc}"[:300],
            )
        )
    return out


# ---------------------------------------------------------------- tar (+ hfutils index)


def _size(path: str, storage: SourceStorage | None) -> int:
    return storage_or_default(storage).size(path) if is_remote(path) else os.path.getsize(path)


def _read(path: str, offset: int, size: int, storage: SourceStorage | None) -> bytes:
    if is_remote(path):
        return storage_or_default(storage).read_range(path, offset, size)
    with open_regular(path) as fh:
        fh.seek(offset)
        return fh.read(size)


@contextlib.contextmanager
def _open_tar(path: str, storage: SourceStorage | None) -> Iterator[tarfile.TarFile]:
    """On a store only the headers are read (tarfile seeks past each member's data), as ranged reads."""
    if not is_remote(path):
        with open_regular(path) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            yield tf
        return
    with storage_or_default(storage).open(path) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
        yield tf


def _list_tar(
    source: str, path: str, rel: str, root: str, storage: SourceStorage | None, out: Listing
) -> None:
    archive_size = _size(path, storage)
    where = _where_of(path)
    indexed = _from_index(source, path, rel, root, archive_size, storage, out)
    if indexed is not None:
        out.members += indexed
        return
    with _open_tar(path, storage) as tf:
        for info in tf:
            if info.isdir() or _refused_member(source, rel, info, out):
                continue
            if info.offset_data + info.size > archive_size:
                out.problems.append(Record(
                    source, f"{rel}:{info.name}", None, reject_reason="bad_archive",
                    reject_detail=f"member {info.name!r} is cut off: the archive ends at byte {archive_size}",
                ))  # fmt: skip
                continue
            out.members.append(
                Member(
                    where, info.name, info.size, tar_location(where, info.offset_data, info.size, info.name)
                )
            )
        stopped = tf.offset
    # tarfile ends its walk quietly at a damaged header: the rest of the tar would be lost unseen
    if stopped < archive_size and _read(path, stopped, 512, storage).strip(b"\0"):
        out.problems.append(Record(
            source, rel, None, reject_reason="bad_archive",
            reject_detail=f"unreadable tar header at byte {stopped} of {archive_size}: the members after it are not read",
        ))  # fmt: skip


def index_path(tar_path: str) -> str:
    """hfutils' sidecar index of a tar: the same name with ``.json`` (tar_create_index)."""
    return tar_path[: -len(".tar")] + ".json"


def _exists(path: str, storage: SourceStorage | None) -> bool:
    """A file or object at ``path``; locally any entry that is not a folder (a link, a FIFO: the
    metadata-file policy then refuses it with a reject row, rather than ignoring it unseen)."""
    if is_remote(path):
        return storage_or_default(storage).isfile(path)
    return os.path.lexists(path) and not os.path.isdir(path)


def _from_index(
    source: str,
    path: str,
    rel: str,
    root: str,
    archive_size: int,
    storage: SourceStorage | None,
    out: Listing,
) -> list[Member] | None:
    """The members an hfutils index lists, when it lies beside the tar and matches it; else None
    (the tar's headers are read instead, and a note says why). An index that links out of the
    source or is not a regular file is never opened: one reject row, and the headers are read."""
    ipath = index_path(path)
    if not _exists(ipath, storage):
        return None
    refused = metadata_refusal(ipath, root, storage)
    if refused is not None:
        out.problems.append(Record(
            source, relpath(ipath, root), None, reject_reason=refused.reason,
            reject_detail=f"index of {rel} not read: {refused}"[:300],
        ))  # fmt: skip
        return None
    why = None
    try:
        size = _size(ipath, storage)
        if size > INDEX_MAX_BYTES:
            raise ValueError(f"{size} bytes is too large for an index")
        index = json.loads(_read(ipath, 0, size, storage))
        files = index.get("files") if isinstance(index, dict) else None
        if not isinstance(files, dict) or not files:
            raise ValueError("no 'files' table")
        if index.get("filesize") != archive_size:
            raise ValueError(
                f"it describes a tar of {index.get('filesize')} bytes, this one has {archive_size}"
            )
        entries = []
        for name, meta in files.items():
            offset, length = meta.get("offset"), meta.get("size", meta.get("length"))
            if not isinstance(offset, int) or not isinstance(length, int) or offset < 512 or length < 0:
                raise ValueError(f"entry {name!r} has no usable offset/size")
            if offset + length > archive_size:
                raise ValueError(f"entry {name!r} ends past the end of the tar")
            entries.append((offset, name, length))
        entries.sort()
        for offset, name, length in (entries[0], entries[-1]):  # spot-check: the headers say the same
            problem = _header_mismatch(_read(path, offset - 512, 512, storage), name, length)
            if problem:
                raise ValueError(problem)
    except (ValueError, OSError, AttributeError, TypeError) as exc:
        why = str(exc)[:200]
    if why is not None:
        out.notes.append(
            f"{relpath(ipath, path.rpartition('/')[0])} is not a usable index of {rel} ({why}): its headers were read instead"
        )
        return None
    where = _where_of(path)
    members = []
    for offset, name, length in entries:
        reason = unsafe_name(name)
        if reason is not None:
            out.problems.append(
                Record(source, f"{rel}:{name}", None, reject_reason="unsafe_member", reject_detail=reason)
            )
            continue
        members.append(Member(where, name, length, tar_location(where, offset, length, name)))
    return members


def _header_mismatch(block: bytes, name: str, size: int) -> str | None:
    """Why the 512-byte tar header before a member's data does not describe (name, size)."""
    if len(block) != 512:
        return "the header is cut"
    try:
        checksum = int(block[148:156].split(b"\x00")[0].strip() or b"0", 8)
        length = int(block[124:136].split(b"\x00")[0].strip() or b"0", 8)
    except ValueError:
        return "no tar header before the member's data"
    unsigned = sum(block[:148]) + 32 * 8 + sum(block[156:])
    if checksum != unsigned:
        return "no tar header before the member's data"
    if length != size:
        return f"the tar header of {name!r} says {length} bytes, the index {size}"
    short = block[:100].split(b"\x00")[0].decode("utf-8", "replace")
    prefix = block[345:500].split(b"\x00")[0].decode("utf-8", "replace") if block[257:262] == b"ustar" else ""
    full = f"{prefix}/{short}" if prefix else short
    if name not in (full, short) and not name.startswith(short):  # GNU long names are cut at 100
        return f"the tar header names {full!r}, the index {name!r}"
    return None


# ---------------------------------------------------------------- tar.gz


def _list_tgz(source: str, path: str, rel: str, storage: SourceStorage | None, out: Listing) -> None:
    size = _size(path, storage)
    if size > BIG_TGZ:
        out.notes.append(
            f"{rel} is a {size >> 20} MiB .tar.gz: reading a member decompresses from the archive's start; "
            f"gunzip it to a .tar for a faster build (docs/sources.md)"
        )
    where = _where_of(path)
    with _open_archive(path, storage, 8 << 20) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tf:
        for info in tf:
            if info.isdir() or _refused_member(source, rel, info, out):
                continue
            loc = f"tgz://{quote_path(where)}#{info.offset_data}:{info.size}:{quote(os.fsencode(info.name), safe='')}"
            out.members.append(Member(where, info.name, info.size, loc))


@contextlib.contextmanager
def _open_archive(path: str, storage: SourceStorage | None, block: int = 0) -> Iterator[io.IOBase]:
    """An archive's file: local (a regular file only), or a store object read in ranged reads of
    ``block`` bytes (0: as the reader asks: a zip's central directory is a few small reads)."""
    if not is_remote(path):
        with open_regular(path) as fh:
            yield fh
        return
    with storage_or_default(storage).open(path) as raw:
        yield io.BufferedReader(raw, buffer_size=block) if block else raw  # type: ignore[arg-type]


# ---------------------------------------------------------------- zip

ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2"}


def _list_zip(source: str, path: str, rel: str, storage: SourceStorage | None, out: Listing) -> None:
    where = _where_of(path)
    with _open_archive(path, storage) as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            reason = None
            if stat.S_ISLNK(mode):
                reason = f"link member {info.filename!r}"
            else:
                reason = unsafe_name(info.filename)
            if reason is None and info.flag_bits & 0x1:
                reason = f"member {info.filename!r} is encrypted"
            if reason is None and info.compress_type not in ZIP_METHODS:
                out.problems.append(Record(
                    source, f"{rel}:{info.filename}", None, reject_reason="unsupported_format",
                    reject_detail=f"zip member {info.filename!r} uses compression method {info.compress_type} "
                                  f"(readable: {', '.join(ZIP_METHODS.values())})",
                ))  # fmt: skip
                continue
            if reason is not None:
                out.problems.append(
                    Record(
                        source,
                        f"{rel}:{info.filename}",
                        None,
                        reject_reason="unsafe_member",
                        reject_detail=reason,
                    )
                )
                continue
            loc = (
                f"zip://{quote_path(where)}#{info.header_offset}:{info.compress_size}:{info.file_size}:"
                f"{info.compress_type}:{info.CRC}:{quote(info.filename.encode('utf-8', 'surrogateescape'), safe='')}"
            )
            out.members.append(Member(where, info.filename, info.file_size, loc))


# ---------------------------------------------------------------- samples


@dataclass
class Samples:
    """The samples of some archives, by key, plus what could not be used."""

    by_key: dict[str, Sample] = field(default_factory=dict)
    problems: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strays: Counter = field(
        default_factory=Counter
    )  # "*.lineart.canny.png" -> members neither image nor sidecar
    archives: int = 0


def numeric(key: str) -> bool:
    """A post id as a key: digits without a leading zero (``000123`` is a WebDataset counter)."""
    return key.isdigit() and not key.startswith("0")


def join_key(sample_key: str, archive_rel: str, by: str) -> str:
    """How a sample is found: ``id`` (a Danbooru dump: the member's base name is the post id), or
    ``key`` (the whole key: a linepairs OUT, whose keys are unique sample keys)."""
    if by == "key":
        return sample_key
    base = sample_key.rpartition("/")[2]
    return base if numeric(base) else f"{archive_rel}:{sample_key}"


def collect(
    source: str,
    archives: list[str],
    root: str,
    storage: SourceStorage | None = None,
    *,
    by: str = "id",
    sidecars: tuple[str, ...] = SIDECAR_SUFFIXES,
) -> Samples:
    """Every sample of ``archives`` by join key (see ``join_key``). A second image of a key is a
    ``duplicate_id`` problem; a member that is neither a post file nor a sidecar is a stray."""
    out = Samples(archives=len(archives))
    for path in archives:
        rel = relpath(path, root)
        listing = list_archive(source, path, root, storage)
        out.problems += listing.problems
        out.notes += listing.notes
        rule = "folder" if archive_type(path) == "zip" else "webdataset"
        for member in listing.members:
            if hidden(member.name):  # macOS's __MACOSX/ and ._name copies, editor and VCS files
                out.strays["hidden (.name, __MACOSX/)"] += 1
                continue
            key, suffix = split_key(member.name, rule)
            if not key:
                out.strays[_pattern(suffix)] += 1
                continue
            jk = join_key(key, rel, by)
            if suffix in POST_FILE_EXTS:
                sample = out.by_key.setdefault(jk, Sample(path, key))
                if sample.image is None:
                    sample.image = member
                    sample.archive = path
                else:
                    first = sample.image
                    out.problems.append(Record(
                        source, f"{rel}:{member.name}", None, reject_reason="duplicate_id",
                        reject_detail=f"{rel}:{member.name} repeats {jk} of "
                                      f"{first.archive.rpartition('/')[2]}:{first.name}",
                    ))  # fmt: skip
            elif suffix in sidecars:
                sample = out.by_key.setdefault(jk, Sample(path, key))
                if suffix in sample.sidecars:
                    out.strays[f"repeated *.{suffix}"] += 1
                else:
                    sample.sidecars[suffix] = member
            else:
                out.strays[_pattern(suffix)] += 1
    for jk in [k for k, s in out.by_key.items() if s.image is None]:
        for suffix in out.by_key.pop(jk).sidecars:  # metadata of no image in these archives
            out.strays[f"*.{suffix} without an image"] += 1
    return out


def hidden(name: str) -> bool:
    """A member a folder walk would skip: a part starting with ``.`` (``._img.png``, ``.git/``) or
    macOS's ``__MACOSX/`` resource-fork folder in zips."""
    return any(
        part.startswith(".") and part not in (".", "..") or part == "__MACOSX" for part in name.split("/")
    )


def _pattern(suffix: str) -> str:
    return f"*.{suffix}" if suffix else "(no suffix)"


def stray_line(strays: Counter, limit: int = 6) -> str:
    """One line for members that are neither images nor sidecars."""
    shown = ", ".join(f"{n} {p}" for p, n in strays.most_common(limit))
    more = len(strays) - limit
    return f"{sum(strays.values())} member(s) are neither images nor their metadata, skipped: {shown}" + (
        f" and {more} more kinds" if more > 0 else ""
    )


def read_member(member: Member, max_bytes: int, storage: SourceStorage | None = None) -> bytes:
    """The bytes of a (sidecar) member through read_location, with its byte cap."""
    from ..fetch import read_location

    return read_location(member.location, max_bytes, storage)


__all__ = [
    "ARCHIVE_SUFFIXES", "Listing", "Member", "Sample", "Samples", "archive_type", "archives_below", "collect",
    "index_path", "join_key", "list_archive", "numeric", "read_member", "split_key", "stray_line",
    "unsafe_reason",
]  # fmt: skip
