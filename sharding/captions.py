"""Captions from Danbooru tags: the one rule that the shards' ``txt`` member, ``linepairs export``
and the W-net's text encoder all use, so a caption reads the same everywhere.

The rule: comma-separated tags in a fixed category order (character, copyright, artist, general by
default; meta tags such as ``highres`` or ``commentary_request`` describe the file, not the picture,
and are dropped unless asked for), each category's tags in the order the source gave them, then a
prose caption (a folder's ``.txt``/``.caption`` sentence) when there is one, on the same line (its
whitespace runs, line breaks included, become one space: kohya reads only a caption file's first
line and SimpleTuner takes each line as a separate caption). Danbooru joins
tag words with ``_``; prompts for anime models are usually written with spaces, so ``_`` becomes a
space by default, except in kaomoji tags (``^_^``, ``>_<``) whose underscore is the face itself.

``keep_tokens`` is the number of leading comma-separated pieces that name who and what the picture is
(the identity categories: character, copyright, artist): kohya's ``keep_tokens`` keeps that many
pieces in place when it shuffles a caption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from curation.records import TAG_CATEGORIES

DEFAULT_ORDER = ("character", "copyright", "artist", "general")
IDENTITY = frozenset({"character", "copyright", "artist"})
# Tags whose underscore is part of the face (the list WD taggers keep underscores for).
KAOMOJI = frozenset(
    {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@",
     "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}
)  # fmt: skip


class CaptionError(ValueError):
    """A caption rule that cannot be used (unknown or repeated category)."""


@dataclass(frozen=True)
class CaptionRule:
    """How tags become a caption. ``order``: the categories used, in this order (a category not
    named is left out: meta by default); ``underscores``: keep Danbooru's ``_`` inside tags (True)
    or write spaces (False, the default; kaomoji keep theirs)."""

    order: tuple[str, ...] = DEFAULT_ORDER
    underscores: bool = False

    def __post_init__(self) -> None:
        unknown = [c for c in self.order if c not in TAG_CATEGORIES]
        if unknown:
            raise CaptionError(
                f"caption order names unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(unknown)}; known: {', '.join(TAG_CATEGORIES)}"
            )
        if len(set(self.order)) != len(self.order):
            raise CaptionError(f"caption order names a category twice: {', '.join(self.order)}")

    @classmethod
    def parse(cls, order: str | None = None, underscores: bool = False) -> CaptionRule:
        """From command-line text: ``order`` is comma-separated categories (``character,general``)."""
        if order is None:
            return cls(underscores=underscores)
        return cls(tuple(c.strip() for c in order.split(",") if c.strip()), underscores)

    def describe(self) -> dict[str, object]:
        """The rule as JSON-able facts (recorded by every export)."""
        return {"order": list(self.order), "underscores": self.underscores, "kaomoji_keep_underscores": True}


@dataclass(frozen=True)
class Caption:
    text: str  # "" when the sample has no tags and no prose
    keep_tokens: int  # leading comma-separated pieces from the identity categories
    tags: int  # tags in the caption


def spell(tag: str, underscores: bool) -> str:
    """One Danbooru tag as it is written in a caption."""
    if underscores or tag in KAOMOJI:
        return tag
    return tag.replace("_", " ")


def caption(
    tags: Mapping[str, Sequence[str] | str | None],
    rule: CaptionRule = CaptionRule(),
    prose: str | None = None,
) -> Caption:
    """``tags``: category -> list of tags, or a Danbooru tag string (space-separated), as the manifest
    and the sample JSON hold them. A tag repeated across categories is written once, at its first place."""
    pieces: list[str] = []
    seen: set[str] = set()
    keep = 0
    for cat in rule.order:
        value = tags.get(cat) or ()
        for tag in value.split() if isinstance(value, str) else value:
            if not tag or tag in seen:
                continue
            seen.add(tag)
            pieces.append(spell(tag, rule.underscores))
            if cat in IDENTITY and keep == len(pieces) - 1:
                keep += 1
    n_tags = len(pieces)
    prose = " ".join((prose or "").split())  # one line (see the module doc)
    if prose:
        pieces.append(prose)
    return Caption(", ".join(pieces), keep, n_tags)


def caption_of_row(row: Mapping[str, object], rule: CaptionRule = CaptionRule()) -> Caption:
    """A manifest or scan row (``tags_{category}`` columns, optional ``caption`` prose)."""
    tags = {c: row.get(f"tags_{c}") for c in TAG_CATEGORIES}
    prose = row.get("caption")
    return caption(tags, rule, prose if isinstance(prose, str) else None)  # type: ignore[arg-type]


__all__ = [
    "Caption",
    "CaptionError",
    "CaptionRule",
    "DEFAULT_ORDER",
    "KAOMOJI",
    "caption",
    "caption_of_row",
    "spell",
]
