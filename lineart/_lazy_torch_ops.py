"""``lineart.classical_torch``'s functions, imported on their first call.

Registering the classical operators names their torch implementations; importing torch for that
costs ~1.6 s and ~500 MB in every process (driver, scan task, CPU actor) that only runs OpenCV.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("__"):
        raise AttributeError(name)

    @functools.wraps(_placeholder)
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module("lineart.classical_torch"), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _placeholder(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - only lends its signature
    raise NotImplementedError
