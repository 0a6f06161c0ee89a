"""Tag hygiene, in one place: every source reader's tags pass through ``clean_tags`` (through
``curation.sources.iter_records``), so no reader can let a control character or an empty tag into
the manifest, the sample JSON or the audit page.

The rules (docs/sources.md, "Tag hygiene"):

* whitespace inside a tag (spaces, tabs, newlines, no-break and ideographic spaces) becomes one
  ``_`` and letters are lower case, Danbooru's spelling (``Blue Hair`` is ``blue_hair``, so a banned
  tag matches however a caption wrote it); whitespace at the ends goes;
* invisible format characters (zero-width space, BOM, soft hyphen, word joiner, bidirectional
  overrides) are removed: they make two spellings of one tag and, in HTML, can reorder text;
* a tag that is empty after that is dropped; a tag repeated (in its category or another) is kept
  once, in the most specific category (character, copyright, artist, meta, then general);
* a tag that cannot be cleaned rejects its post (``bad_metadata``): one holding a control
  character (NUL, ESC, the C1 range that mis-decoded text produces ...), a lone surrogate, or more
  than ``MAX_TAG_CHARS`` characters (Danbooru's own limit is 170).

``categorise`` files tags that came without a category (a folder's caption, a flat tag list) by a
tag table (``TagTable``: a Danbooru tags export or a tagger's ``selected_tags.csv``), ``general``
when the table does not know them, and counts those.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .records import TAG_CATEGORIES

MAX_TAG_CHARS = 256
# Tab, newline and carriage return are whitespace (a separator); every other control character
# (C0, DEL, C1) means the text is damaged.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_INVISIBLE = re.compile(r"[\u00ad\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A repeated tag keeps its most specific category.
PRECEDENCE = ("character", "copyright", "artist", "meta", "general")

# Danbooru's tag category numbers (tags.json / the public dump); a tagger's selected_tags.csv uses
# the same numbers plus 9 for its rating labels (not a Danbooru category: such a tag stays general).
CATEGORY_BY_NUMBER = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta"}


class TagProblem(ValueError):
    """A tag that cannot be cleaned; the message names it (escaped) and why."""


def shown(text: str, limit: int = 60) -> str:
    """A tag as a reject detail shows it: escaped, so control characters are visible, and cut."""
    return ascii(text[:limit]) + ("..." if len(text) > limit else "")


def clean_tag(text: str) -> str:
    """One tag in Danbooru's spelling ("" when nothing is left); TagProblem when it cannot be cleaned."""
    if _CONTROL.search(text):
        bad = _CONTROL.search(text).group()
        raise TagProblem(f"tag {shown(text)} holds the control character U+{ord(bad):04X}")
    if _SURROGATE.search(text):
        raise TagProblem(f"tag {shown(text)} holds a lone surrogate (not text)")
    tag = "_".join(_INVISIBLE.sub("", text).split()).lower()
    if len(tag) > MAX_TAG_CHARS:
        raise TagProblem(f"tag {shown(tag)} is {len(tag)} characters long (more than {MAX_TAG_CHARS})")
    return tag


# Anything clean_tag would change or refuse: whitespace, controls, invisible characters, surrogates.
_SUSPECT = re.compile(
    r"[\s\x00-\x1f\x7f-\x9f\u00ad\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _clean_list(tags: Sequence[str]) -> list[str]:
    # one scan of the whole list first: Danbooru's tags are almost always clean already
    joined = "".join(tags)
    if (
        tags
        and joined == joined.lower()
        and not _SUSPECT.search(joined)
        and (len(joined) <= MAX_TAG_CHARS or max(map(len, tags)) <= MAX_TAG_CHARS)
    ):
        return list(tags)
    return [clean_tag(t) for t in tags]


def clean_tags(tags: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Every category cleaned: empty tags dropped, a repeated tag kept once in its most specific
    category, each category's order kept. Raises TagProblem naming the first tag that cannot be
    cleaned."""
    cleaned = {c: _clean_list(tags.get(c) or ()) for c in TAG_CATEGORIES}
    flat = [t for c in TAG_CATEGORIES for t in cleaned[c]]
    if all(flat) and len(set(flat)) == len(flat):  # nothing empty, nothing repeated
        return cleaned
    seen: set[str] = set()
    out = {c: [] for c in TAG_CATEGORIES}
    for cat in PRECEDENCE:
        for tag in cleaned[cat]:
            if tag and tag not in seen:
                seen.add(tag)
                out[cat].append(tag)
    return out


def clean_caption(text: str | None) -> str | None:
    """A prose caption kept as written, except: invisible characters and control characters other
    than line breaks removed, line breaks and runs of whitespace around them made one space (a
    caption is one line in every consumer), ends stripped. None when nothing is left."""
    if text is None:
        return None
    text = _SURROGATE.sub("", _CONTROL.sub("", _INVISIBLE.sub("", text)))
    text = re.sub(r"\s*[\r\n]+\s*", " ", text).strip()
    return text or None


# ---------------------------------------------------------------- tag tables


class TagTableError(ValueError):
    """A tag table that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class TagTable:
    """Tag name (Danbooru spelling) -> category, from a Danbooru tags export or a tagger's
    ``selected_tags.csv``."""

    path: str
    categories: Mapping[str, str]

    def __len__(self) -> int:
        return len(self.categories)


def _category(value: object) -> str | None:
    if isinstance(value, str) and value.strip().lower() in TAG_CATEGORIES:
        return value.strip().lower()
    try:
        return CATEGORY_BY_NUMBER.get(int(str(value).strip()))
    except ValueError:
        return None


# A tag table is named by the user (``[sidecars] tag_table``), so a link to it is followed (a
# tagger's ``selected_tags.csv`` in the Hugging Face cache is a link into its blobs); the rest of the
# metadata-file policy holds: a FIFO or device is never opened, CSV and JSON lines are streamed with
# a cap per line, and a JSON array or parquet table, read whole, has a cap per file.
TAG_TABLE_WHOLE_MAX_BYTES = 256 << 20


def _lines(fh, path: str) -> Iterable[str]:
    """The text lines of a tag table, each read with a cap (``curation.sources.common.capped_lines``)."""
    from .sources.common import METADATA_LINE_MAX_BYTES, capped_lines

    for lineno, line in enumerate(capped_lines(fh), 1):
        if line is None:
            raise TagTableError(
                f"tag table {path}: line {lineno} is over {METADATA_LINE_MAX_BYTES >> 20} MiB"
            )
        text = line.decode("utf-8", errors="replace")
        yield text.removeprefix("\ufeff") if lineno == 1 else text


def _whole(fh, path: str) -> bytes:
    size = os.fstat(fh.fileno()).st_size
    if size > TAG_TABLE_WHOLE_MAX_BYTES:
        raise TagTableError(
            f"tag table {path} is {size} bytes: a JSON array or parquet table over "
            f"{TAG_TABLE_WHOLE_MAX_BYTES >> 20} MiB is not read whole; write it as CSV or JSON lines"
        )
    data = fh.read(TAG_TABLE_WHOLE_MAX_BYTES + 1)
    if len(data) > TAG_TABLE_WHOLE_MAX_BYTES:  # it grew since
        raise TagTableError(f"tag table {path} is over {TAG_TABLE_WHOLE_MAX_BYTES >> 20} MiB")
    return data


def _rows_of(path: str, fh) -> Iterable[tuple[object, object]]:
    """(name, category) pairs of a CSV (header ``name,category``, or headerless
    ``name,category[,count,aliases]`` as the a1111 tag-complete lists), a JSON array / JSON lines
    of ``{name, category}`` objects (Danbooru's /tags.json, the public dump), or a parquet file.
    Read from the open binary file ``fh`` while the caller iterates."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(_whole(fh, path)), columns=["name", "category"])
        return zip(table["name"].to_pylist(), table["category"].to_pylist(), strict=True)
    if lower.endswith((".json", ".jsonl")):
        head = fh.peek(64)[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            items = json.loads(_whole(fh, path).decode("utf-8-sig", errors="replace"))
        else:
            items = (json.loads(x) for x in _lines(fh, path) if x.strip())
        return ((o.get("name"), o.get("category")) for o in items if isinstance(o, dict))
    rows = csv.reader(_lines(fh, path))
    first = next(rows, None)
    if first is None:
        return ()
    if {"name", "category"} <= {c.strip().lower() for c in first}:
        head = [c.strip().lower() for c in first]
        n, c = head.index("name"), head.index("category")
        return ((r[n], r[c]) for r in rows if len(r) > max(n, c))
    return ((r[0], r[1]) for r in itertools.chain([first], rows) if len(r) >= 2)


def read_tag_table(path: str) -> TagTable:
    """A tag table from a local file (CSV, JSON / JSON lines, parquet); TagTableError when it holds
    no usable (name, category) row, is not a regular file, or is over a cap."""
    from .sources.common import open_regular

    categories: dict[str, str] = {}
    try:
        with open_regular(path) as fh:
            for name, cat in _rows_of(path, fh):
                category = _category(cat)
                if not isinstance(name, str) or category is None:
                    continue
                try:
                    tag = clean_tag(name)
                except TagProblem:
                    continue
                if tag:
                    categories.setdefault(tag, category)
    except TagTableError:
        raise
    except OSError as exc:
        raise TagTableError(f"tag table {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, csv.Error) as exc:  # JSON, parquet without the columns, ...
        raise TagTableError(f"tag table {path} is not a name/category table: {str(exc)[:200]}") from None
    if not categories:
        raise TagTableError(
            f"tag table {path} has no (name, category) row with a Danbooru category "
            f"(0 general, 1 artist, 3 copyright, 4 character, 5 meta)"
        )
    return TagTable(path, categories)


def categorise(names: Iterable[str], table: TagTable | None) -> tuple[dict[str, list[str]], int]:
    """Tags without a category filed by ``table`` (``general`` when it does not know them, or when
    there is no table); also returns how many had no category."""
    out = {c: [] for c in TAG_CATEGORIES}
    missing = 0
    known = table.categories if table is not None else {}
    for name in names:
        tag = "_".join(name.split())
        category = known.get(tag) or known.get(tag.lower())  # "Hatsune Miku" written in a caption
        if category is None:
            missing += 1
            category = "general"
        out[category].append(name)
    return out, missing


__all__ = [
    "CATEGORY_BY_NUMBER", "MAX_TAG_CHARS", "TagProblem", "TagTable", "TagTableError", "categorise",
    "clean_caption", "clean_tag", "clean_tags", "read_tag_table", "shown",
]  # fmt: skip
