"""Declarative metadata filters (``[filters]``): decided from the record alone, before any pixel is read.

``check_record`` returns the first (reason, detail) that rejects a scan row, in a fixed order, or
None. Percentile thresholds need the whole source: ``resolve_thresholds`` turns them into plain
numbers once per build (from the enumerated records), so every scan task applies the same cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from groundwork.configtable import from_table

from .records import TAG_CATEGORIES

# Rating letter + era -> rating class. 's' is "safe" in old dumps and "sensitive" in new ones; with
# the era unknown it is read as "sensitive", the stricter meaning, so a "safe only" filter stays safe.
RATING_CLASSES = ("general", "safe", "sensitive", "questionable", "explicit")


def rating_class(letter: str | None, era: str | None) -> str | None:
    """The rating class of a letter; None for an unknown letter (a missing rating is ``"unrated"``)."""
    if letter is None:
        return "unrated"
    if letter == "g":
        return "general"
    if letter == "s":
        return "safe" if era == "old" else "sensitive"
    return {"q": "questionable", "e": "explicit"}.get(letter)


# Tags whose images make poor (illustration, line drawing) pairs for this job (docs/curation.md):
# no colour to learn (monochrome, greyscale, sketch, lineart), several pictures or lettering in one
# frame (comic, 4koma, text_focus, text-only_page), or not drawn anime art (photo_(medium), 3d,
# cosplay_photo). Override with filters.banned_tags = [...] (an empty list turns them all off).
DEFAULT_BANNED_TAGS = (
    "comic", "monochrome", "greyscale", "sketch", "lineart", "4koma", "text_focus", "text-only_page",
    "photo_(medium)", "3d", "cosplay_photo",
)  # fmt: skip


@dataclass(frozen=True)
class FilterConfig:
    """``[filters]``: every key optional; a value of 0 / empty list turns its check off."""

    ratings: tuple[str, ...] = ("general", "safe", "sensitive", "unrated")  # rating classes kept
    min_score: float = (
        -1e9
    )  # Danbooru score (all within +-1e5: -1e9 is "off"; JSON has no -inf); no score passes
    min_fav_count: int = 0
    min_score_percentile: float = 0.0  # 0..100 within each source (of the records that have a score)
    min_fav_percentile: float = 0.0
    required_tags: tuple[str, ...] = ()  # every one of these must be present
    banned_tags: tuple[str, ...] = DEFAULT_BANNED_TAGS
    min_tags: int = 5  # tag count floor; applies to the records min_tags_for names
    # "site": only records whose tags come from a tagging site (a post id: Danbooru dumps, API, tars);
    # a folder's hand-written captions are not a tag list to count. "all": every record with tags.
    min_tags_for: str = "site"
    extensions: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp")  # gif: mostly animations
    min_pixels: int = 0  # width * height; also checked after decoding
    exclude_deleted: bool = True
    exclude_banned: bool = True
    exclude_pending: bool = True
    exclude_flagged: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilterConfig:
        cfg = from_table(cls, data, "filters")
        bad = sorted(set(cfg.ratings) - set(RATING_CLASSES) - {"unrated"})
        if bad:
            raise ValueError(
                f"filters.ratings: unknown class(es) {', '.join(bad)}; known: {', '.join(RATING_CLASSES)}, unrated"
            )
        for key in ("min_score_percentile", "min_fav_percentile"):
            if not 0 <= getattr(cfg, key) <= 100:
                raise ValueError(f"filters.{key} must be within 0..100")
        if cfg.min_tags_for not in ("site", "all"):
            raise ValueError(f"filters.min_tags_for must be 'site' or 'all', got {cfg.min_tags_for!r}")
        if cfg.min_tags < 0 or cfg.min_pixels < 0 or cfg.min_fav_count < 0:
            raise ValueError("filters.min_tags, min_pixels and min_fav_count must be >= 0")
        return cfg.normalised()

    def normalised(self) -> FilterConfig:
        from dataclasses import replace

        return replace(self, extensions=tuple(e.lower().lstrip(".") for e in self.extensions))


@dataclass(frozen=True)
class Thresholds:
    """Absolute score / fav_count floors of one source (the larger of the fixed and percentile cut)."""

    min_score: float = -math.inf
    min_fav_count: float = -math.inf

    def to_dict(self) -> dict[str, float | None]:
        return {
            k: (None if math.isinf(v) else v)
            for k, v in (("min_score", self.min_score), ("min_fav_count", self.min_fav_count))
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        return cls(
            *(-math.inf if data.get(k) is None else float(data[k]) for k in ("min_score", "min_fav_count"))
        )


def _percentile(values: np.ndarray, pct: float) -> float:
    values = values[~np.isnan(values)]
    if pct <= 0 or len(values) == 0:
        return -math.inf
    return float(np.percentile(values, pct, method="lower"))


def resolve_thresholds(
    sources: Sequence[str], scores: np.ndarray, favs: np.ndarray, cfg: FilterConfig
) -> dict[str, Thresholds]:
    """Per source: the score / fav floor, from the fixed minimum and the percentile within the source."""
    sources_arr = np.asarray(sources, dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    favs = np.asarray(favs, dtype=np.float64)
    out = {}
    for name in sorted(set(sources_arr.tolist())):
        sel = sources_arr == name
        out[name] = Thresholds(
            max(cfg.min_score, _percentile(scores[sel], cfg.min_score_percentile)),
            max(
                float(cfg.min_fav_count) if cfg.min_fav_count > 0 else -math.inf,
                _percentile(favs[sel], cfg.min_fav_percentile),
            ),
        )
    return out


def needed_fields(cfg: FilterConfig, predicted: bool = False) -> dict[str, str]:
    """The fields the filters read, as field -> the settings that read it: checked against each
    source's metadata before the scan (``curation.sources.needs``), so a filter never passes or
    rejects everything because its field maps from nothing. ``predicted``: a tagger predicts tags
    and ratings for the records without them (``[scorers.wd_tagger]``), so nothing is needed."""
    if predicted:
        return {}
    needs = {}
    tag_keys = [f"filters.{k}" for k in ("banned_tags", "required_tags") if getattr(cfg, k)]
    if cfg.min_tags:
        tag_keys.append("filters.min_tags")
    if tag_keys:
        needs["tags"] = ", ".join(tag_keys)
    if set(cfg.ratings) != {*RATING_CLASSES, "unrated"}:
        needs["rating"] = f"filters.ratings ({', '.join(cfg.ratings)})"
    return needs


def tag_set(row: Mapping[str, Any]) -> set[str]:
    return {t for c in TAG_CATEGORIES for t in (row.get(f"tags_{c}") or [])}


def check_size(
    width: int | None, height: int | None, *, min_side: int, max_aspect: float, min_pixels: int
) -> tuple[str, str] | None:
    """The size rules shared by the metadata filter and the decoded image."""
    if not width or not height:
        return None
    if min(width, height) < min_side:
        return "too_small", f"{width}x{height}: shorter side < {min_side}"
    if max(width, height) / min(width, height) > max_aspect:
        return (
            "aspect_out_of_range",
            f"{width}x{height}: aspect {max(width, height) / min(width, height):.2f} > {max_aspect}",
        )
    if min_pixels and width * height < min_pixels:
        return "too_few_pixels", f"{width}x{height} = {width * height} pixels < {min_pixels}"
    return None


def check_record(
    row: Mapping[str, Any], cfg: FilterConfig, thresholds: Thresholds, *, min_side: int, max_aspect: float
) -> tuple[str, str] | None:
    """The first metadata filter a scan row fails, as (reason, detail); None when it passes all."""
    letter, era = row.get("rating"), row.get("rating_era")
    cls = rating_class(letter, era)
    if cls is None:
        return "bad_rating", f"rating {letter!r} is not one of g/s/q/e"
    if cls not in cfg.ratings:
        return "rating", f"rating {letter!r} ({era or 'unknown'} era) = {cls}, not in {list(cfg.ratings)}"
    for flag, on in (("is_deleted", cfg.exclude_deleted), ("is_banned", cfg.exclude_banned),
                     ("is_pending", cfg.exclude_pending), ("is_flagged", cfg.exclude_flagged)):  # fmt: skip
        if on and row.get(flag):
            return "status", f"{flag} is true"
    ext = (row.get("ext") or "").lower()
    if cfg.extensions and ext and ext not in cfg.extensions:
        return "extension", f"extension {ext!r} not in {list(cfg.extensions)}"
    # the fixed minimum always applies; the source's percentile cut may be higher
    min_score = max(cfg.min_score, thresholds.min_score)
    min_favs = max(cfg.min_fav_count, thresholds.min_fav_count)
    score = row.get("score")
    if score is not None and not math.isnan(score) and score < min_score:
        return "low_score", f"score {score:g} < {min_score:g}"
    favs = row.get("fav_count")
    if favs is not None and favs < min_favs:
        return "low_fav_count", f"fav_count {favs} < {min_favs:g}"
    tags = tag_set(row)
    if cfg.banned_tags:
        hit = sorted(tags.intersection(cfg.banned_tags))
        if hit:
            return "banned_tag", f"banned tag(s): {', '.join(hit[:5])}"
    if cfg.required_tags:
        missing = [t for t in cfg.required_tags if t not in tags]
        if missing:
            return "missing_tag", f"missing required tag(s): {', '.join(missing[:5])}"
    from_site = row.get("post_id") is not None
    counted = from_site if cfg.min_tags_for == "site" else (from_site or bool(tags))
    if cfg.min_tags and counted and len(tags) < cfg.min_tags:
        return "too_few_tags", f"{len(tags)} tags < {cfg.min_tags}"
    return check_size(
        row.get("width"),
        row.get("height"),
        min_side=min_side,
        max_aspect=max_aspect,
        min_pixels=cfg.min_pixels,
    )
