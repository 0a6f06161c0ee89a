"""What ``linepairs export`` is asked: the command line's options as one request."""

from __future__ import annotations

from dataclasses import dataclass, field

from .repeats import DEFAULT_LEVELS


@dataclass
class ExportRequest:
    out: str
    dest: str
    target: str
    weights: str | None = None  # weight version (None: the active one)
    extractor: str | None = None  # "canny,xdog=0" (drawings.py)
    invert: bool | None = None  # None: the target's default polarity
    caption_order: str | None = None  # "character,copyright,artist,general" (sharding/captions.py)
    underscores: bool = False
    val: int = 0
    repeat_levels: int = DEFAULT_LEVELS
    resolution: int | None = None  # None: the target's default
    seed: int = 0
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)  # never recorded
    workers: int = 4
    show_progress: bool = True


__all__ = ["ExportRequest"]
