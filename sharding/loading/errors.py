"""The loader's errors: each message says what cannot be read and where."""

from __future__ import annotations

# What to do about a damaged table: the build command restores what the rest of OUT can rebuild.
REPAIR_HINT = "run the build command again to repair it (`linepairs verify OUT` lists every fault)"


class LoaderError(ValueError):
    """A build that cannot be read as asked; the message says what and where."""


class ShardError(LoaderError):
    """A shard is missing, truncated or unreadable; the message names it."""


class LoaderStateError(LoaderError):
    """A saved state that does not belong to this build or these loader settings."""


__all__ = ["REPAIR_HINT", "LoaderError", "LoaderStateError", "ShardError"]
