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


def parent_uri(uri: str) -> str:
    """The folder that holds `uri`; a bucket or filesystem root is its own parent (s3a://bucket, file:/)."""
    parsed = urlparse(uri)
    path = parsed.path.rstrip("/")
    if not path:
        return uri.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    if parsed.scheme:
        authority = f"//{parsed.netloc}" if parsed.netloc or uri.startswith(f"{parsed.scheme}://") else ""
        return f"{parsed.scheme}:{authority}{parent or '/'}"
    return parent or "/"


def sql_string(value: str) -> str:
    """A Spark SQL string literal: quotes and backslashes escaped, so a location cannot end the string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    """A column name as a Spark SQL quoted identifier (a backtick inside the name is doubled)."""
    return "`" + name.replace("`", "``") + "`"


_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*)(:[^/@\s]*)?@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:sig|signature|token|access_?key|secret|password|x-amz-signature|x-amz-credential)=)[^&\s]+"
)


def mask_credentials(text: str) -> str:
    """`text` with the credentials of any URL in it replaced by ***: user:password@ and signed query keys."""
    masked = _USER_INFO.sub(lambda m: f"{m['scheme']}***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}***", masked)
