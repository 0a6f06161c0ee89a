"""Shared parsing of Danbooru-style metadata: coercion of loose types, tags, image lookup."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..records import TAG_CATEGORIES, Record
from ..storage import SourceStorage, is_remote, storage_or_default

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "avif"})
NOT_STILL_EXTS = frozenset({"mp4", "webm", "zip", "swf", "mkv", "avi", "mov"})

# gwern/API tag category numbers (Danbooru's own enum).
CATEGORY_BY_NUMBER = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}


INT64_MAX = 2**63 - 1


def as_int(value: Any) -> int | None:
    """Ints arrive as numbers or strings; ``"0"``-style nulls are the caller's business.

    The result is unbounded: ``out_of_range`` tells the caller it does not fit a 64-bit column.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-")
        if digits.isascii() and digits.isdigit():
            if len(digits) > 19:  # int() of thousands of digits is refused (or slow): out of range anyway
                return -(INT64_MAX + 2) if text.startswith("-") else INT64_MAX + 1
            return int(text)
    return None


def out_of_range(value: int | None) -> bool:
    return value is not None and not -INT64_MAX - 1 <= value <= INT64_MAX


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # SQLite has no boolean type
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "t", "f"):
        return value.lower() in ("true", "t")
    return None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def split_tags(value: Any) -> list[str]:
    """Danbooru tag strings split on whitespace only (tags contain ':', '(', quotes, ...)."""
    return value.split() if isinstance(value, str) else []


def tag_name(text: str) -> str:
    """A tag in Danbooru's spelling: inner whitespace runs become ``_`` ("blue hair" -> "blue_hair"),
    so a tag never holds whitespace and a sample's tags are a lossless tag string (sharding/samplejson.py)."""
    return "_".join(text.split())


def tags_from_post(post: dict[str, Any]) -> dict[str, list[str]]:
    tags = {c: [] for c in TAG_CATEGORIES}
    if isinstance(post.get("tags"), list):  # gwern 2017-2020: list of {name, category}
        for tag in post["tags"]:
            if not isinstance(tag, dict) or not isinstance(tag.get("name"), str):
                continue
            cat = CATEGORY_BY_NUMBER.get(as_int(tag.get("category")) or 0, "general")
            if name := tag_name(tag["name"]):
                tags[cat].append(name)
        return tags
    found = False
    for cat in TAG_CATEGORIES:
        if f"tag_string_{cat}" in post:
            tags[cat] = split_tags(post[f"tag_string_{cat}"])
            found = True
    if not found:
        tags["general"] = split_tags(post.get("tag_string"))
    return tags


class Unreadable(str):
    """Stands in for a post that cannot be parsed; the text says why (becomes ``bad_metadata``)."""

    reason = "bad_metadata"


class Refused(Unreadable):
    """Stands in for a whole metadata file that is never read; the text says why (``reason``)."""

    def __new__(cls, text: str, reason: str = "bad_metadata") -> Refused:
        obj = super().__new__(cls, text)
        obj.reason = reason
        return obj


# Metadata files get the images' policy: a link that leaves the source folder, a FIFO or device is
# never opened, and no read is unbounded. JSON lines are streamed with a cap per line (a post is a
# few KB); a JSON array is parsed whole, so the file has a cap (a Danbooru API page is a few MB).
METADATA_LINE_MAX_BYTES = 16 << 20
METADATA_ARRAY_MAX_BYTES = 256 << 20
_READ_BLOCK = 1 << 20


def metadata_refusal(
    path: str, root: str | None = None, storage: SourceStorage | None = None
) -> Refused | None:
    """Why the metadata file ``path`` is not read (None: read it): it resolves outside ``root``
    (default: its own folder), or is not a regular file. Object stores have neither links nor FIFOs."""
    if is_remote(path):
        return None
    outside = leaves_root(root or os.path.dirname(path), path)
    if outside:
        return Refused(outside, "outside_source")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return Refused(f"{path}: cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(mode):
        return Refused(f"{path} is not a regular file (a FIFO, device, socket or folder): not opened")
    return None


class MetadataRefused(ValueError):
    """A metadata file that is never opened (``metadata_refusal``), raised where a reader opens
    files through a library (parquet, SQLite, DuckDB, archives and their indexes): the reader turns
    it into the file's one reject row (``record``) and goes on with the rest of the source."""

    def __init__(self, path: str, refused: Refused) -> None:
        super().__init__(str(refused))
        self.path, self.refused = path, refused

    @property
    def reason(self) -> str:
        return self.refused.reason

    def record(self, source: str, where: str) -> Record:
        return Record(source, where, None, reject_reason=self.reason, reject_detail=str(self.refused)[:300])


def check_metadata_file(path: str, root: str | None = None, storage: SourceStorage | None = None) -> None:
    """MetadataRefused when ``metadata_refusal`` refuses ``path`` (a link out of ``root``, a FIFO)."""
    refused = metadata_refusal(path, root, storage)
    if refused is not None:
        raise MetadataRefused(path, refused)


def open_regular(path: str) -> BinaryIO:
    """A local file opened for reading only when it is a regular file as opened: non-blocking, then
    checked on the open handle, so a FIFO swapped in after ``metadata_refusal`` cannot block and a
    device is never read. OSError otherwise. Every local metadata file is opened through this."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file (a FIFO, device, socket or folder): not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: reads block as usual (no EAGAIN on NFS)
        return os.fdopen(fd, "rb")
    except BaseException:  # noqa: BLE001 - close the descriptor, then re-raise
        os.close(fd)
        raise


@contextlib.contextmanager
def open_metadata(path: str, storage: SourceStorage | None = None) -> Iterator[BinaryIO]:
    """A binary handle on a metadata file that is a regular file when opened (``open_regular``)."""
    if is_remote(path):  # ranged GETs of 8 MiB, not one per line (the store's file has no cache)
        with storage_or_default(storage).open(path) as raw:
            yield io.BufferedReader(_RawReader(raw), buffer_size=8 << 20)
        return
    with open_regular(path) as fh:
        yield fh


class _RawReader(io.RawIOBase):
    """A file-like with ``read(n)`` as the raw stream of an ``io.BufferedReader``."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.fh.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def capped_lines(fh: BinaryIO, limit: int = METADATA_LINE_MAX_BYTES) -> Iterator[bytes | None]:
    """The lines of a binary stream, each read with at most ``limit`` bytes in memory; a longer line
    yields None and is skipped to its end block by block (a 1 GiB line without a newline costs 1 MiB)."""
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while (block := fh.readline(_READ_BLOCK)) and not block.endswith(b"\n"):
            pass
        yield None


# A JSON parse can fail with ValueError (JSONDecodeError, an int of too many digits) or
# RecursionError (deeply nested brackets): either is one bad line, never the end of the source.
_JSON_FAULTS = (ValueError, RecursionError)
_WS = re.compile(r"\s*")


def is_file(path: str, storage: SourceStorage | None = None) -> bool:
    """A regular file (local) or an object (URL)."""
    return storage_or_default(storage).isfile(path) if is_remote(path) else os.path.isfile(path)


def is_dir(path: str, storage: SourceStorage | None = None) -> bool:
    return storage_or_default(storage).isdir(path) if is_remote(path) else os.path.isdir(path)


def read_small(path: str, limit: int, storage: SourceStorage | None = None) -> bytes:
    """At most ``limit`` bytes from the start of a file or object (sidecars, headers); a local file
    that is not a regular file is OSError, never opened (``open_regular``)."""
    if is_remote(path):
        with storage_or_default(storage).open(path) as fh:
            return fh.read(limit)
    with open_regular(path) as fh:
        return fh.read(limit)


def iter_json_posts(
    path: str, storage: SourceStorage | None = None, root: str | None = None
) -> Iterator[tuple[int, Any]]:
    """(position, object) for a JSON array file or JSON lines; a bad line yields (pos, Unreadable),
    a file that is not read at all (``metadata_refusal``, the caps) one (0, Refused)."""
    refused = metadata_refusal(path, root, storage)
    if refused is not None:
        yield 0, refused
        return
    with open_metadata(path, storage) as fh:
        head = fh.read(64)
        is_array = head.lstrip().startswith((b"[", b"\xef\xbb\xbf["))
        if is_array:
            size = _size(path, fh, storage)  # from the file's metadata: a sparse 8 GiB array is never read
            data = (
                head + fh.read(METADATA_ARRAY_MAX_BYTES + 1 - len(head))
                if size <= METADATA_ARRAY_MAX_BYTES
                else b""
            )
            if size > METADATA_ARRAY_MAX_BYTES or len(data) > METADATA_ARRAY_MAX_BYTES:  # (or it grew since)
                yield (
                    0,
                    Refused(
                        f"{path}: a JSON array of {max(size, len(data))} bytes (over {METADATA_ARRAY_MAX_BYTES >> 20} "
                        "MiB) is not read whole; write it as JSON lines (one post per line), which are read line by line"
                    ),
                )
                return
            text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
            del data
            yield from _iter_array(text)
            return
        lines = capped_lines(_Prefixed(head, fh))
        for lineno, line in enumerate(lines, 1):
            if line is None:
                yield (
                    lineno,
                    Unreadable(f"line {lineno} is over {METADATA_LINE_MAX_BYTES >> 20} MiB: not read"),
                )
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line.decode("utf-8", errors="replace"))
            except _JSON_FAULTS as exc:
                yield lineno, Unreadable(f"line {lineno} is not JSON: {type(exc).__name__}: {exc}"[:200])


def _size(path: str, fh: Any, storage: SourceStorage | None) -> int:
    if is_remote(path):
        return storage_or_default(storage).size(path)
    return os.fstat(fh.fileno()).st_size


class _Prefixed:
    """A binary stream with ``head`` (already read) put back in front, for ``readline``."""

    def __init__(self, head: bytes, fh: BinaryIO) -> None:
        self.head, self.fh = head, fh

    def readline(self, limit: int = -1) -> bytes:
        if not self.head:
            return self.fh.readline(limit)
        cut = self.head.find(b"\n")
        if cut >= 0 and (limit < 0 or cut < limit):
            line, self.head = self.head[: cut + 1], self.head[cut + 1 :]
            return line
        if limit >= 0 and len(self.head) >= limit:
            line, self.head = self.head[:limit], self.head[limit:]
            return line
        line, self.head = self.head, b""
        return line + self.fh.readline(-1 if limit < 0 else limit - len(line))


def _iter_array(text: str) -> Iterator[tuple[int, Any]]:
    """The items of a JSON array one by one, so a file cut short still yields every whole post
    before the cut (then one Unreadable for the rest)."""
    decoder = json.JSONDecoder()
    i = _WS.match(text, text.index("[") + 1).end()
    pos = 0
    if text.startswith("]", i):
        return
    while True:
        try:
            item, i = decoder.raw_decode(text, i)
        except _JSON_FAULTS as exc:
            yield (
                pos,
                Unreadable(
                    f"the JSON array is unreadable from item {pos} on: {type(exc).__name__}: {exc}"[:200]
                ),
            )
            return
        yield pos, item
        pos += 1
        i = _WS.match(text, i).end()
        if text.startswith(",", i):
            i = _WS.match(text, i + 1).end()
        elif text.startswith("]", i):
            if text[i + 1 :].strip():
                yield pos, Unreadable(f"text after the end of the JSON array at character {i + 1}")
            return
        else:
            yield pos, Unreadable(f"the JSON array is cut or malformed after item {pos - 1}")
            return


# Ratings: letters in every dump, numbers 0..3 in KBlueLeaf's danbooru2023 database, words in some tools.
RATING_BY_NUMBER = {0: "g", 1: "s", 2: "q", 3: "e"}
RATING_BY_WORD = {"general": ("g", "new"), "sensitive": ("s", "new"), "safe": ("s", "old"),
                  "questionable": ("q", None), "explicit": ("e", None)}  # fmt: skip
# Keys only the pre-2022 API returned (FORMATS.md); their presence dates the record to the old ratings.
OLD_ERA_KEYS = ("is_note_locked", "is_rating_locked", "pool_string", "is_favorited")


RATING_LETTERS = ("g", "s", "q", "e")


def rating_and_era(post: dict[str, Any], era: str | None) -> tuple[str | None, str | None]:
    """The rating letter (lowercase; None or an unknown letter is a ``bad_rating``) and its era.

    ``era`` is the source's setting ("old" / "new"); without it the record decides: ``g`` or a
    ``media_asset`` (2023+ API) mean new, a 2020-only key means old, otherwise the era stays unknown.
    """
    raw = post.get("rating")
    letter: str | None = None
    word_era = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        letter = RATING_BY_NUMBER.get(raw, str(raw))
        word_era = "new"
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip().lower()
        if text in RATING_BY_WORD:
            letter, word_era = RATING_BY_WORD[text]
        else:
            letter = text[:16]
    if era is None:
        era = word_era
    if era is None:
        if letter == "g" or isinstance(post.get("media_asset"), dict):
            era = "new"
        elif any(k in post for k in OLD_ERA_KEYS):
            era = "old"
    return letter, era


def record_from_post(
    source: str, post: Any, where: str, era: str | None = None, *, rating_required: bool = True
) -> Record:
    """Normalise one Danbooru post (API, gwern 2017-20 or 2021 flat rows, parquet) into a Record.

    ``where`` identifies the line for rejects of posts without a usable id; ``era`` is the
    rating era of the dump when the source knows it. ``rating_required=False``: the source has no
    rating at all (its mapping was checked against the filters before the scan), so a post
    without one is unrated rather than ``bad_rating``.
    """
    if isinstance(post, Unreadable):
        return Record(source, where, None, reject_reason=post.reason, reject_detail=str(post))
    if not isinstance(post, dict):
        return Record(source, where, None, reject_reason="bad_metadata", reject_detail="not a JSON object")
    post_id = as_int(post.get("id"))
    if post_id is None or post_id <= 0 or out_of_range(post_id):
        return Record(
            source,
            where,
            None,
            reject_reason="bad_metadata",
            reject_detail=f"id is not a positive 64-bit integer: {str(post.get('id'))[:60]!r}",
        )
    for key in ("image_width", "image_height", "fav_count", "score"):
        if out_of_range(as_int(post.get(key))):
            return Record(
                source, str(post_id), None, post_id=post_id, reject_reason="bad_metadata",
                reject_detail=f"{key} {str(post.get(key))[:40]!r} does not fit 64 bits",
            )  # fmt: skip
    media = post.get("media_asset") if isinstance(post.get("media_asset"), dict) else {}
    width = as_int(post.get("image_width"))
    height = as_int(post.get("image_height"))
    if (width is not None and width < 0) or (height is not None and height < 0):
        return Record(
            source, str(post_id), None, post_id=post_id, reject_reason="bad_metadata",
            reject_detail=f"negative image size {width}x{height}",
        )  # fmt: skip
    rating, rating_era = rating_and_era(post, era)
    if rating is None and not rating_required:
        rating_era = None
    elif rating not in RATING_LETTERS:
        # fail closed: a missing or malformed rating must not read as "unrated", which filters keep
        return Record(
            source, str(post_id), None, post_id=post_id, reject_reason="bad_rating",
            reject_detail=f"rating {str(post.get('rating', '(missing)'))[:40]!r} is not one of g/s/q/e, 0-3 or a rating word",
        )  # fmt: skip
    fav = as_int(post.get("fav_count"))
    if fav is None and isinstance(post.get("favs"), list):
        fav = len(post["favs"])
    md5 = as_str(post.get("md5"))
    rec = Record(
        source=source,
        source_id=str(post_id),
        location=None,
        post_id=post_id,
        md5=md5.lower() if md5 else None,
        ext=(as_str(post.get("file_ext")) or "").lower() or None,
        width=width if width and width > 0 else None,
        height=height if height and height > 0 else None,
        rating=rating,
        rating_era=rating_era,
        tags=tags_from_post(post),
        score=float(s) if (s := as_int(post.get("score"))) is not None else None,
        fav_count=fav,
        is_deleted=as_bool(post.get("is_deleted")),
        is_banned=as_bool(post.get("is_banned")),
        is_pending=as_bool(post.get("is_pending")),
        is_flagged=as_bool(post.get("is_flagged")),
    )
    duration = media.get("duration", post.get("duration"))  # parquet exports carry it at top level
    if rec.ext in NOT_STILL_EXTS or (
        isinstance(duration, int | float) and duration == duration and duration != 0
    ):
        rec.reject_reason = "unsupported_format"
        rec.reject_detail = f"file_ext {rec.ext!r} is not a still image"
    return rec


def walk_files(folder: str, storage: SourceStorage | None = None) -> list[str]:
    """Every file below ``folder`` (hidden names skipped), sorted; a URL folder lists its objects.

    Symlink policy: links to folders are never followed (so a link loop cannot repeat the tree);
    links to files are listed, and ``leaves_root`` rejects those that resolve outside the source.
    """
    if is_remote(folder):
        return storage_or_default(storage).files(folder)
    found = []
    for root, dirs, files in walk_tree(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, n) for n in files if not n.startswith(".")]
    return sorted(found)


def walk_tree(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` (top-down, folder links listed but never entered, unreadable folders
    skipped; the caller may prune ``dirs``) without recursion: Python 3.11's os.walk recurses once
    per level, so a chain of ~1,000 nested folders was a RecursionError."""
    stack = [top]
    while stack:
        root = stack.pop()
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        dirs, files, links = [], [], set()
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links, as os.walk does to sort names
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
            if is_dir and entry.is_symlink():
                links.add(entry.name)
        yield root, dirs, files
        stack.extend(os.path.join(root, d) for d in reversed(dirs) if d not in links)


# A Hugging Face hub cache (``huggingface_hub.snapshot_download``, ``hf download`` without
# ``--local-dir``) keeps a repo as ``{kind}s--{org}--{name}/snapshots/{revision}/...`` whose files are
# links into the same repo folder's ``blobs/``: links that stay inside that repo folder are the layout.
_HF_SNAPSHOT = re.compile(
    r"^(?P<repo>.*[\\/](?:datasets|models|spaces)--[^\\/]+)[\\/]snapshots[\\/][^\\/]+(?:[\\/]|$)"
)


def _inside(real: str, base: str) -> bool:
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def leaves_root(root: str, path: str) -> str | None:
    """Why ``path`` is outside the source folder ``root`` once links are resolved (None: inside).
    A source inside an HF hub cache snapshot may also resolve into its repo's ``blobs/``.

    Object stores have no links: a URL is never outside."""
    if is_remote(path):
        return None
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if _inside(real, base):
        return None
    hub = _HF_SNAPSHOT.match(os.path.abspath(root) + os.sep)
    if hub and _inside(real, os.path.join(os.path.realpath(hub["repo"]), "blobs")):
        return None
    return f"{os.path.relpath(path, root)} is a link to {real}, outside the source folder {base}"


def index_images(folder: str, storage: SourceStorage | None = None) -> dict[str, list[str]]:
    """Map file stem -> every image path with that stem below ``folder``, in sorted order."""
    found: dict[str, list[str]] = {}
    for path in walk_files(folder, storage):
        stem, _, ext = path.rpartition("/")[2].rpartition(".")
        if stem and ext.lower() in IMAGE_EXTS:
            found.setdefault(stem, []).append(path)
    return found


def attach_image(rec: Record, path: str | None, missing: str) -> Record:
    """Point a metadata record at its image file, or reject it as ``missing_file`` with ``missing``."""
    if rec.reject_reason is not None:
        return rec
    if path is None:
        rec.reject_reason, rec.reject_detail = "missing_file", missing
    else:
        rec.location = path
        rec.ext = path.rpartition(".")[2].lower()
    return rec
