"""Paths in config are local paths or Hadoop/fsspec URLs (s3a://, abfss://, dbfs:/, hdfs://)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def is_url(location: str) -> bool:
    return bool(_URL_SCHEME.match(location))


def resolve_uri(location: str) -> str:
    """A URL stays as it is; a local path becomes an absolute file: URI (relative to the cwd)."""
    if is_url(location):
        return location.rstrip("/")
    return Path(location).expanduser().resolve().as_uri()


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def local_path(uri: str) -> Path:
    """The local filesystem path of a file: URI or plain path; other schemes are not local."""
    if not is_url(uri):
        return Path(uri)
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"{uri} is not on the local filesystem")
    return Path(unquote(parsed.path))


def same_location(first: str, second: str) -> bool:
    """Whether two URIs name one folder (file:/x, file:///x and /x/ are the same place)."""

    def normalized(uri: str) -> tuple[str, str, str]:
        parsed = urlparse(uri)
        scheme = parsed.scheme or "file"
        return scheme, parsed.netloc if scheme != "file" else "", unquote(parsed.path).rstrip("/")

    return normalized(first) == normalized(second)
