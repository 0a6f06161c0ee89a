"""Filesystems of paths and URLs through one ``pyarrow.fs`` interface, and their faults in one line.

A location is a local path, a ``file://`` URL or an object-store URL (``s3://``, ``gs://``, anything
pyarrow or fsspec opens). ``s3://`` is s3fs behind pyarrow's interface (botocore reads the standard
``AWS_*`` variables, endpoint included; see ``_s3``); ``gs://`` and the rest are pyarrow's own
clients, else fsspec's. OUT (``sharding.layout``) and URL sources (``curation.storage``) both open
their stores here. Messages never show a secret: ``redact_url`` drops ``user:password@``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs


class StorageError(ValueError):
    """OUT or a source cannot be opened as given; the message says which and why (never a secret)."""


def is_content_fault(exc: BaseException) -> bool:
    """An error reading a file that is about its bytes (a bad parquet page, a cut stream), not about
    reaching it: pyarrow raises plain ``OSError`` without errno for those, while missing files,
    permissions and network faults are subclasses (FileNotFoundError, PermissionError, ...)."""
    return type(exc) is OSError and exc.errno is None


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then what caused it: ``__cause__``, ``__context__`` and the ``cause`` a Ray task error wraps."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


# botocore's names (matched by class name, so this module needs no botocore import)
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError",
                "ServerDisconnectedError", "ConnectionClosedError", "ClientOSError")  # fmt: skip


_NO_BUCKET = re.compile(r"NoSuchBucket|specified bucket does not exist", re.IGNORECASE)


def storage_fault(exc: BaseException) -> str | None:
    """One line for an object-store fault anywhere in ``exc``'s chain (no credentials, access denied,
    a missing bucket, an endpoint that does not answer); None when it is not one. Never the secret:
    only the error's class and the store's own first line (which names no key)."""
    for err in causes(exc):
        name = type(err).__name__
        if name in _NO_CREDENTIALS:
            return (
                f"no usable credentials for the store ({first_line(err)}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or --storage-option key=... secret=..."
            )
        if isinstance(err, PermissionError) and err.errno is None:  # s3fs: 403 Forbidden, no errno
            return (
                f"the store refused access ({first_line(err)}): check the credentials (a wrong key or "
                "secret reads as Forbidden) and the bucket's policy"
            )
        # the store's own words (S3's NoSuchBucket), never a path: a bucket named "my-bucket" holding
        # a file that went missing in an outage is not a missing bucket
        if isinstance(err, FileNotFoundError) and err.errno is None and _NO_BUCKET.search(str(err)):
            return f"the bucket does not exist ({first_line(err)}); create it or fix the URL"
        if name in _UNREACHABLE or (isinstance(err, ConnectionError) and err.errno is None):
            return (
                f"the store does not answer ({first_line(err)}): is the endpoint (AWS_ENDPOINT_URL / "
                "--storage-option endpoint_url) up? Finished work is kept: run the same command again"
            )
        if name == "ClientError":  # any other refusal of the S3 API, e.g. InvalidAccessKeyId
            return f"the store refused the request ({first_line(err)})"
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most 300 characters."""
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:300]


def is_url(location: str) -> bool:
    return "://" in location


def open_filesystem(
    location: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URL; ``storage_options`` configure the client."""
    options = dict(storage_options or {})
    if not is_url(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    scheme = location.split("://", 1)[0].lower()
    if scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(location.split("://", 1)[1] or "/")
    if scheme == "s3":
        return _s3(location, options)
    if not options:
        try:
            fs, path = pafs.FileSystem.from_uri(location)
            return fs, path.rstrip("/")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
            pass
    return _fsspec(location, options)


# pyarrow's S3FileSystem spellings of s3fs options, so either habit works on the command line.
_S3_ALIASES = {
    "access_key": "key",
    "secret_key": "secret",
    "session_token": "token",
    "endpoint_override": "endpoint_url",
}


_S3_ENV = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "key": ("AWS_ACCESS_KEY_ID",),
    "secret": ("AWS_SECRET_ACCESS_KEY",),
    "token": ("AWS_SESSION_TOKEN",),
}


def _s3(location: str, options: dict[str, Any]) -> tuple[pafs.FileSystem, str]:
    """s3fs behind pyarrow.fs: botocore reads every ``AWS_*`` variable (``AWS_ENDPOINT_URL`` included).

    Not pyarrow's own S3 client: it ignores ``AWS_ENDPOINT_URL`` and its multipart completion
    fails against S3-compatible servers (moto) that s3fs handles.
    """
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        key = _S3_ALIASES.get(key, key)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if key in ("region", "region_name"):
            kwargs.setdefault("client_kwargs", {})["region_name"] = value
        else:
            kwargs[key] = value
    # Settings given as AWS_* variables here travel with the (pickled) filesystem to every Ray
    # worker, so only the driver's machine needs them; profiles and instance roles resolve per node.
    for key, names in _S3_ENV.items():
        value = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if value and key not in kwargs:
            kwargs[key] = value
    region = next((os.environ[n] for n in ("AWS_REGION", "AWS_DEFAULT_REGION") if os.environ.get(n)), None)
    if region:
        kwargs.setdefault("client_kwargs", {}).setdefault("region_name", region)
    # Another process (a worker) may have written since we listed: never answer from a stale listing.
    kwargs.setdefault("use_listings_cache", False)
    return _fsspec(location, kwargs)


def _fsspec(location: str, options: dict[str, Any]) -> tuple[pafs.FileSystem, str]:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(location, **options)
    except ImportError as exc:
        raise StorageError(f"cannot open {redact_url(location)}: {first_line(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise StorageError(f"cannot open {redact_url(location)}: {first_line(exc)}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def redact_url(location: str) -> str:
    """A URL without any ``user:password@`` part, for messages."""
    scheme, sep, rest = location.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def parse_storage_options(items: list[str] | None) -> dict[str, str]:
    """``--storage-option KEY=VALUE`` (repeatable) -> dict; a bad item is a one-line StorageError."""
    options: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise StorageError(f"--storage-option wants KEY=VALUE, got {item.split('=')[0]!r}")
        options[key.strip()] = value
    return options


__all__ = [
    "StorageError", "causes", "first_line", "is_content_fault", "is_url", "open_filesystem",
    "parse_storage_options", "redact_url", "storage_fault",
]  # fmt: skip
