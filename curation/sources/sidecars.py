"""Metadata written beside an image: caption text files (``.txt``, ``.caption``), tag files
(``.tags``) and JSON (``.json``: a Danbooru post, a linepairs sample JSON, or ``{tags, caption}``).

Caption files hold what people write for kohya-style trainers: comma-separated tags, a sentence,
or tags then a sentence. The rule that tells them apart (docs/sources.md, "Captions"): the text is
cut into pieces at commas and line breaks; the first piece that reads as prose starts the caption,
which runs verbatim to the end of the text, and the pieces before it are tags. A piece is a tag
when the tag table knows it; otherwise it is prose when it has at least 5 words, or ends with
``.``, ``!`` or ``?`` and has at least 2 words, or starts with ``a`` / ``an`` and has at least 3
words. ``\\(`` and ``\\)`` in tags (prompt-weight escapes a tagger may write) are read as ``(``
and ``)``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..records import TAG_CATEGORIES
from ..tags import TagTable, categorise
from .common import as_int

SIDECAR_MAX_BYTES = 1 << 20  # captions and tags, not a novel: a larger (or sparse) file is read this far
_PIECE = re.compile(r"[^,\r\n]+")
_SENTENCE_END = (".", "!", "?", "。", "！", "？")


def decode_text(raw: bytes) -> str:
    """A sidecar's text: BOM dropped, invalid UTF-8 replaced and then removed (never fatal)."""
    return raw.decode("utf-8-sig", errors="replace").replace("\ufffd", "")


def _is_prose(piece: str, table: TagTable | None) -> bool:
    if table is not None and "_".join(piece.split()) in table.categories:
        return False
    words = piece.split()
    if len(words) >= 5:
        return True
    if len(words) >= 2 and piece.endswith(_SENTENCE_END):
        return True
    return len(words) >= 3 and words[0].lower() in ("a", "an")


def _unescape(tag: str) -> str:
    return tag.replace("\\(", "(").replace("\\)", ")")


def parse_caption(text: str, table: TagTable | None = None) -> tuple[dict[str, list[str]], str | None, int]:
    """(tags by category, prose caption or None, tags without a category) of a caption file."""
    names: list[str] = []
    prose = None
    for match in _PIECE.finditer(text):
        piece = match.group().strip()
        if not piece:
            continue
        if _is_prose(piece, table):
            prose = text[match.start() :].strip()
            break
        names.append(_unescape(piece))
    tags, missing = categorise(names, table)
    return tags, prose, missing


def parse_tag_file(text: str, table: TagTable | None = None) -> tuple[dict[str, list[str]], int]:
    """A ``.tags`` file: one tag per line or comma-separated; a single line without commas is a
    Danbooru tag string (space-separated)."""
    lines = [x for x in text.splitlines() if x.strip()]
    if len(lines) == 1 and "," not in lines[0]:
        names = lines[0].split()
    else:
        names = [_unescape(p.strip()) for p in _PIECE.findall(text) if p.strip()]
    return categorise(names, table)


def post_from_json(
    obj: Any, table: TagTable | None = None
) -> tuple[dict[str, Any], dict[str, list[str]] | None, str | None, int | None]:
    """(post fields for record_from_post, tags or None when the post's own tag fields say them,
    caption, uncategorised count) of a JSON sidecar. Raises ValueError for one that is not an object.

    Reads a Danbooru post (API, gwern; its ``tag_string*`` / ``tags`` fields as they are), a
    linepairs sample JSON (``tags`` per category as tag strings; ``id`` -1, ``fav_count`` -1 and
    ``rating`` "" mean none) and plain ``{"tags": [...] or "a, b", "caption": ...}`` objects.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON sidecar must be an object, got {type(obj).__name__}")
    post = dict(obj)
    tags: dict[str, list[str]] | None = None
    missing: int | None = None
    raw = post.get("tags")
    if isinstance(raw, dict):  # a linepairs sample JSON: category -> tag string (or list)
        tags = {c: [] for c in TAG_CATEGORIES}
        for cat, value in raw.items():
            if cat in tags:
                tags[cat] = (
                    value.split()
                    if isinstance(value, str)
                    else [t for t in value or () if isinstance(t, str)]
                )
        post.pop("tags")
    elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        tags, missing = categorise(raw, table)
        post.pop("tags")
    elif isinstance(raw, str):
        names = [p.strip() for p in raw.split(",")] if ", " in raw else raw.split()
        tags, missing = categorise([n for n in names if n], table)
        post.pop("tags")
    elif not any(f"tag_string_{c}" in post for c in TAG_CATEGORIES) and isinstance(
        post.get("tag_string"), str
    ):
        tags, missing = categorise(post["tag_string"].split(), table)
    # linepairs' sentinels are absent values
    if (as_int(post.get("id")) or 0) <= 0:
        post.pop("id", None)
    if post.get("fav_count") == -1:
        post.pop("fav_count")
    if post.get("has_score") is False:
        post.pop("score", None)
    if post.get("rating") == "":
        post.pop("rating")
    caption = next(
        (post[k] for k in ("caption", "text") if isinstance(post.get(k), str) and post[k].strip()), None
    )
    return post, tags, caption, missing


def load_json(raw: bytes) -> Any:
    return json.loads(decode_text(raw))


__all__ = [
    "SIDECAR_MAX_BYTES",
    "decode_text",
    "load_json",
    "parse_caption",
    "parse_tag_file",
    "post_from_json",
]
