"""Learned line extractors, one module per architecture; importing this package registers them.

Each network is state-dict compatible with its public checkpoint and reproduces the pre- and
post-processing of its reference wrapper (controlnet_aux, or comfyui_controlnet_aux for
``manga_line``), returning ``255 - reference``: dark ink on white paper.
"""

from . import anime2sketch, hed, informative, manga_line, pidinet, teed  # noqa: F401  (registration)
from .base import NetExtractor, NetSpec

__all__ = ["NetExtractor", "NetSpec"]
