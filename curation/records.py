"""The one record type every source yields, and the fixed vocabulary of reject reasons."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .address import path_location

TAG_CATEGORIES = ("general", "artist", "character", "copyright", "meta")

# stage -> reasons. Every reject row carries one of these; docs/rejects.md explains each.
REJECT_REASONS: dict[str, tuple[str, ...]] = {
    "metadata": (
        # what the source reader found
        "bad_metadata",  # the record could not be parsed, lacks a usable id, has a negative size or a tag that cannot be cleaned
        "duplicate_id",  # the same (source, id) was seen earlier in the dump
        "missing_file",  # no image for the post on disk / in the tars, or it could not be read
        "no_metadata",  # a tar member that no metadata row describes
        "unsafe_member",  # a tar member that is a link, a device, absolute, or reaches outside with '..'
        "outside_source",  # a file (or tar) whose links resolve outside the source folder: never read
        "bad_archive",  # a tar that cannot be read to the end (members before the fault are kept)
        "unsupported_format",  # video, ugoira, flash: not a still image
        # the declarative [filters], applied before any pixel is read
        "bad_rating",  # a rating that is missing, malformed or unknown (fail closed: never "unrated")
        "rating",  # the rating (read with the era of the dump) is not in filters.ratings
        "low_score",  # under filters.min_score or the source's min_score_percentile
        "low_fav_count",  # under filters.min_fav_count or the source's min_fav_percentile
        "banned_tag",  # carries one of filters.banned_tags
        "missing_tag",  # lacks one of filters.required_tags
        "too_few_tags",  # fewer tags than filters.min_tags
        "extension",  # file extension not in filters.extensions
        "status",  # deleted / banned / pending / flagged, as filters.exclude_* say
        "too_small",  # metadata size: shorter side under scan.min_side
        "too_few_pixels",  # metadata size: under filters.min_pixels
        "aspect_out_of_range",  # metadata size: long/short side over scan.max_aspect
    ),
    "decode": (
        "not_a_file",  # a FIFO, device, socket or folder with an image's name: never opened
        "too_many_bytes",  # over scan.max_bytes (the byte twin of the pixel guard), checked before reading
        "too_slow",  # one input took longer than scan.max_seconds
        "scan_error",  # any other failure on this one input; the detail names it
        "empty_file",
        "decode_error",  # not an image, truncated, or corrupt
        "too_many_pixels",  # over the pixel-count bomb guard, checked before decoding
        "animated",  # more than one frame
        "too_small",  # shorter side under scan.min_side
        "too_few_pixels",  # under filters.min_pixels
        "aspect_out_of_range",  # long/short side over scan.max_aspect
    ),
    # pixel metrics over [metrics] thresholds (curation/metrics.py)
    "metric": (
        "greyscale",  # chroma_p95 under min_chroma_p95
        "monochrome",  # hue_spread under min_hue_spread and saturation under max_tint_saturation: one weak tint
        "blank",  # intensity_std under min_intensity_std
        "low_entropy",  # entropy under min_entropy
        "low_colorfulness",  # colorfulness under min_colorfulness
        "noisy",  # noise over max_noise: grain where the picture should be flat
        "blurry",  # sharpness under min_sharpness
        "low_jpeg_quality",  # estimated JPEG quality under min_jpeg_quality
        "upscaled",  # short side / upscale factor under min_effective_side x scan.min_side
        "jpeg_blocking",  # blockiness over max_blockiness (also in PNGs re-saved from a JPEG)
        "letterboxed",  # border_fraction over max_border_fraction
        "text_heavy",  # text_density over max_text_density, or text_area (large lettering) over max_text_area
        "panels",  # a panel grid or speech balloons (panels / balloons over their max); straight_lines when enabled
        "not_illustration",  # illustration probability under min_illustration: photo or render
    ),
    # learned scorers' predictions, for records without tags / rating of their own (curation/scorers/apply.py)
    "scorer": (
        "predicted_banned_tag",  # wd_tagger predicts one of filters.banned_tags
        "predicted_rating",  # wd_tagger's (or dbrating's) rating is not in filters.ratings
        # the deepghs classifiers' verdicts on every image (curation/scorers/deepghs.py)
        "not_illustration",  # anime_real: a photograph; anime_classify: 3D or not a painting
        "comic",  # anime_classify: a comic page or panel
        "monochrome",  # monochrome: greyscale or one tint, as Danbooru tags it
    ),
    "dedup": (
        "exact_duplicate",  # byte-identical to the kept sample named in duplicate_of
        "near_duplicate",  # perceptual hash within dedup.radius of a group whose best member is kept
    ),
    "plan": (
        "too_small_for_bucket",  # would need more than buckets.max_upscale to fill even a min_side bucket
    ),
    "pair": (
        "materialize_error",  # the image changed or vanished between scan and materialize
        # no line drawing passed pair quality (lineart/quality.py); detail names each extractor's problem
        "lines_empty",  # every drawing had next to no ink
        "lines_drowned",  # every drawing was mostly ink
        "lines_speckled",  # every drawing was mostly isolated specks
        "lines_framed",  # every drawing had a thin frame along an edge (padding residue)
        "lines_unusable",  # every drawing failed, for different reasons
    ),
}


@dataclass
class Record:
    """A post or file from any source, before its pixels are read.

    ``location`` is a local path or a tar member (``curation.fetch.read_location``); ``source_id`` is the post id as text, or for a folder source
    the file's path relative to the folder.
    """

    source: str
    source_id: str
    location: str | None
    post_id: int | None = None
    md5: str | None = None
    ext: str | None = None
    width: int | None = None
    height: int | None = None
    rating: str | None = None
    tags: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in TAG_CATEGORIES})
    score: float | None = None
    fav_count: int | None = None
    is_deleted: bool | None = None
    is_banned: bool | None = None
    is_pending: bool | None = None
    is_flagged: bool | None = None
    rating_era: str | None = None  # "old" (s = safe, before ~2022) or "new" (g/s = general/sensitive)
    caption: str | None = None  # prose written beside the image (a folder's .txt/.caption sentence), verbatim
    # tags that came without a category (a caption, a flat tag list) and no tag table knew: filed as
    # general; None where the source gives every tag its category (Danbooru metadata)
    uncategorised_tags: int | None = None
    reject_reason: str | None = None  # set by a source reader for metadata-level rejects
    reject_detail: str | None = None

    @property
    def key(self) -> str:
        return sample_key(self.source, self.source_id)

    def to_row(self) -> dict[str, Any]:
        """The record as a row of ``sharding.schema.RECORD_SCHEMA`` (which is derived from this class)."""
        # field by field, not dataclasses.asdict: that deep-copies every tag (most of the cost of
        # enumerating a 10-million-post dump)
        row = {}
        for name in _SCALAR_FIELDS:
            v = getattr(self, name)
            row[name] = text(v) if isinstance(v, str) and not v.isascii() else v
        tags = self.tags
        for cat in TAG_CATEGORIES:
            row[f"tags_{cat}"] = [t if t.isascii() else text(t) for t in tags.get(cat, [])]
        row["location"] = path_location(self.location) if self.location else self.location
        row["key"] = self.key
        return row


_SCALAR_FIELDS = tuple(f.name for f in fields(Record) if f.name != "tags")


def text(value: str) -> str:
    """Valid UTF-8 for a parquet string: file names that are not UTF-8 (and lone surrogates from
    JSON escapes) show their bad bytes as ``\\xNN``."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:  # a name read from disk: its undecodable bytes came in as surrogate escapes
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_KEY_SAFE = re.compile(r"[a-z0-9][a-z0-9-]*_[A-Za-z0-9_-]{1,100}")  # a sample key: {source}_{id}


def sample_key(source: str, source_id: str) -> str:
    """WebDataset key ``{source}_{id}``: no dots (webdataset splits on the first dot).

    Numeric ids stay readable, and so do ids already made of key characters only (a linepairs
    OUT's keys, read back as a source: ``old_danbooru_123``); anything else (paths) is sanitised
    and suffixed with a short hash of the original so that two paths that sanitise alike still
    get distinct keys. No other reader yields key-safe ids that are not numbers (paths have a dot,
    tar members a colon), so the two forms never meet within one source.
    """
    if source_id.isdigit() or _KEY_SAFE.fullmatch(source_id):
        return f"{source}_{source_id}"
    slug = _UNSAFE.sub("_", source_id).strip("_")[:60]
    digest = hashlib.sha1(source_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{source}_{slug}_{digest}"


def source_name_ok(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9-]*", name))
