"""Errors that reach the user as one clear line."""

from __future__ import annotations

import re

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments, config or paths: printed as one line, exit code 2."""


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, a cause, or the cause a Ray task error wraps), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def os_error_line(err: OSError) -> str:
    """One line for a failed write or read: what, where, and that a re-run resumes."""
    # the temporary name of an atomic write says less than the file it was going to be
    where = f": {re.sub(r'[.]tmp-[0-9]+-[0-9a-f]+$', '', str(err.filename))}" if err.filename else ""
    return f"{err.strerror or err}{where} (fix it and run the same command again: finished work is kept)"
