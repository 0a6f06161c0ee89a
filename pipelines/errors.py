"""Errors that reach the user as one clear line."""

from __future__ import annotations

import re

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments, config or paths: printed as one line, exit code 2."""


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, a cause, or the cause a Ray task error wraps), if any."""
    from sharding.layout import causes

    return next((e for e in causes(exc) if isinstance(e, OSError) and e.errno is not None), None)


def fault_line(exc: BaseException, where: str | None = None) -> str | None:
    """One line for a fault of the machine or the store behind ``exc`` (None: a bug, let it show):
    a store's refusal, outage or missing bucket (naming ``where``, OUT's URL), a damaged file of OUT,
    then a failed read or write (disk full, read-only)."""
    from sharding.layout import DamagedFileError, causes, storage_fault

    store = storage_fault(exc)
    if store is not None:
        return f"{where}: {store}" if where else store
    damaged = next((e for e in causes(exc) if isinstance(e, DamagedFileError)), None)
    if damaged is not None:
        if any(part in damaged.path.replace("\\", "/").split("/") for part in ("_state", "scan")):
            # a unit of an unfinished build: made again when it is missing (docs/architecture.md, Resume)
            return f"{damaged}; delete it and run the same command again: it is made again"
        return (
            f"{damaged}; run the build command again to repair it (`linepairs verify OUT` lists every fault)"
        )
    err = os_error_in(exc)
    return os_error_line(err) if err is not None else None


def os_error_line(err: OSError) -> str:
    """One line for a failed write or read: what, where, and that a re-run resumes."""
    # the temporary name of an atomic write says less than the file it was going to be
    where = f": {re.sub(r'[.]tmp-[0-9]+-[0-9a-f]+$', '', str(err.filename))}" if err.filename else ""
    return f"{err.strerror or err}{where} (fix it and run the same command again: finished work is kept)"
