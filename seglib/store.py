"""Files written from executors (training checkpoints), through fsspec: a local path, file://,
hdfs://, s3://, abfss://, gs://, and dbfs:/ (Databricks' FUSE mount at /dbfs)."""

from __future__ import annotations

import uuid
from typing import Any

from seglib.paths import join_uri


def _filesystem(uri: str) -> tuple[Any, str]:
    import fsspec

    if uri.startswith("dbfs:/"):
        uri = "/dbfs/" + uri.removeprefix("dbfs:/").lstrip("/")
    filesystem, path = fsspec.core.url_to_fs(uri)
    return filesystem, path


def join(base: str, *parts: str) -> str:
    return join_uri(base, *parts)


def write_bytes(uri: str, payload: bytes) -> None:
    """Whole-file write under a temporary name, then a rename: a reader never sees half a checkpoint."""
    filesystem, path = _filesystem(uri)
    filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"  # never shared by two writers of one file
    with filesystem.open(temporary, "wb") as stream:
        stream.write(payload)
    filesystem.mv(temporary, path)


def read_bytes(uri: str) -> bytes:
    filesystem, path = _filesystem(uri)
    with filesystem.open(path, "rb") as stream:
        return bytes(stream.read())


def list_names(uri: str) -> list[str]:
    """File names (no temporary ones) directly under `uri`, sorted; empty when it does not exist."""
    filesystem, path = _filesystem(uri)
    if not filesystem.exists(path):
        return []
    names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in filesystem.ls(path, detail=False))
    return sorted(name for name in names if not name.endswith(".tmp"))


def delete(uri: str) -> None:
    filesystem, path = _filesystem(uri)
    if filesystem.exists(path):
        filesystem.rm(path, recursive=True)
