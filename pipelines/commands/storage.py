"""``--storage-option KEY=VALUE``: client settings for an OUT on object storage (shared by the commands).

Credentials and endpoints normally come from the standard ``AWS_*`` variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``); these options override them with
fsspec's keyword names (``endpoint_url``, ``key``, ``secret``, ``anon``, ``region``). Never printed.
"""

from __future__ import annotations

import argparse

from ..errors import UsageError


def add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE",
        help="object-storage client option for a URL OUT (repeatable), e.g. endpoint_url=http://host:9000",
    )  # fmt: skip


def add_out_argument(p: argparse.ArgumentParser) -> None:
    """The positional OUT of a command that reads a finished build, with its ``--storage-option``."""
    p.add_argument("out", metavar="OUT", help="a finished build (path or URL, e.g. s3://bucket/pairs)")
    add_storage_option(p)


def open_out(location: str, args: argparse.Namespace):
    """OUT's Layout with the command's storage options; a bad URL or option, a store that does not
    answer or refuses, a missing bucket: one line naming the URL, exit 2."""
    from sharding.layout import Layout, StorageError, parse_storage_options

    try:
        layout = Layout(location, parse_storage_options(getattr(args, "storage_option", None)))
        layout.probe()  # an unreachable store, refused credentials, a missing bucket: said here, once
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    return layout


def storage_options(args: argparse.Namespace) -> dict[str, str]:
    """The command's ``--storage-option`` settings, for a command whose library opens OUT itself
    (``train``: every Ray Train worker opens the build with them)."""
    from sharding.layout import StorageError, parse_storage_options

    try:
        return parse_storage_options(getattr(args, "storage_option", None))
    except StorageError as exc:
        raise UsageError(str(exc)) from None


def outage_line(args: argparse.Namespace) -> str | None:
    """A command failed on a URL OUT: one line when the store does not answer *now* (or refuses,
    or lost its bucket), found by probing it again. Mid-command, an endpoint going away can show
    to s3fs as a file gone missing, which would otherwise read as a damaged build."""
    from sharding.layout import is_url

    out = getattr(args, "out", None)
    if not isinstance(out, str) or not is_url(out):
        return None
    try:
        open_out(out, args)
    except UsageError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a probe on the error path must never hide the error it explains
        return None
    return None
