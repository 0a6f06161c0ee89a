"""Errors that reach the user as one clear line."""

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments, config or paths: printed as one line, exit code 2."""
