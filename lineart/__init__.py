"""Line extraction: ``lineart.available()`` and ``lineart.create(name, weights=None, device="cpu", **opts)``."""

import importlib

from . import classical as _classical  # noqa: F401  (registers the classical operators)
from .registry import (
    EXTRACTORS,
    Extractor,
    ExtractorInfo,
    UnknownExtractorError,
    available,
    check_options,
    create,
    extract_each,
    info,
)


def _register_nets() -> None:
    """Import lineart.nets (torch) once, only when a learned network is asked for or listed."""
    importlib.import_module("lineart.nets")


# The learned networks (lineart.nets, which needs torch) register on first need: info() imports
# them for a name it does not know, available() before listing.
EXTRACTORS.discover = _register_nets

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
