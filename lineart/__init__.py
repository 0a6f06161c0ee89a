"""Line extraction: ``lineart.available()`` and ``lineart.create(name, weights=None, device="cpu", **opts)``."""

from . import classical as _classical  # noqa: F401  (registers the classical operators)

# The learned networks (lineart.nets, which needs torch) register on first need: registry.info()
# imports them for a name it does not know, registry.available() before listing.
from .registry import (
    Extractor,
    ExtractorInfo,
    UnknownExtractorError,
    available,
    check_options,
    create,
    extract_each,
    info,
)

__all__ = [
    "Extractor",
    "ExtractorInfo",
    "UnknownExtractorError",
    "available",
    "check_options",
    "create",
    "extract_each",
    "info",
]
