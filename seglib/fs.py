"""Small files (metadata, model weights) on any Hadoop filesystem the session can reach.

Going through Spark's Hadoop configuration means the same code writes to a local folder, HDFS,
S3 (s3a://), ADLS (abfss://) or DBFS, with the credentials the cluster already has.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from seglib.paths import local_path


def _path_and_fs(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    assert jvm is not None, "the SparkSession has no JVM gateway"
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]


def exists(spark: SparkSession, uri: str) -> bool:
    path, fs = _path_and_fs(spark, uri)
    return bool(fs.exists(path))


def list_directories(spark: SparkSession, uri: str) -> list[str]:
    """Names of the sub-directories of `uri`, sorted; empty when `uri` does not exist."""
    path, fs = _path_and_fs(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(path) if status.isDirectory())


def is_empty_directory(spark: SparkSession, uri: str) -> bool:
    """Whether `uri` is an existing folder with nothing in it."""
    path, fs = _path_and_fs(spark, uri)
    return bool(fs.exists(path)) and bool(fs.getFileStatus(path).isDirectory()) and len(fs.listStatus(path)) == 0


def _local_file(uri: str) -> Path | None:
    """The local path of a file: URI (or plain path); None for other filesystems."""
    try:
        return local_path(uri)
    except ValueError:
        return None


def write_bytes(spark: SparkSession, uri: str, payload: bytes) -> None:
    """Write a whole file: to a temporary name of its own first, then renamed over the old file in one
    step, so that readers see the old or the new file, never half a file and never no file."""
    local = _local_file(uri)
    if local is not None:
        # os.replace is one atomic rename. Hadoop's local filesystem renames a checksum side file
        # separately, and two writers racing could leave one's data beside the other's checksum.
        local.parent.mkdir(parents=True, exist_ok=True)
        temporary_file = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
        temporary_file.write_bytes(payload)
        os.replace(temporary_file, local)
        local.with_name(f".{local.name}.crc").unlink(missing_ok=True)  # left by a Hadoop write
        return
    path, filesystem = _path_and_fs(spark, uri)
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    # A name per write: two writers of one pointer never share (or delete) each other's temporary file.
    temporary = jvm.org.apache.hadoop.fs.Path(f"{uri}.{uuid.uuid4().hex}.tmp")
    stream = filesystem.create(temporary, True)
    try:
        stream.write(bytearray(payload))
    finally:
        stream.close()
    try:
        _rename_over(spark, temporary, path)
    except Exception:
        filesystem.delete(temporary, False)
        raise


def _rename_over(spark: SparkSession, source: Any, target: Any) -> None:
    """Replace `target` by `source` in one step where the filesystem can.

    HDFS refuses a plain rename onto an existing file (returns false) but replaces it atomically with
    FileContext's OVERWRITE option. Elsewhere (object stores) FileContext's generic overwrite is a delete
    then a rename, so the old file is moved aside first and kept until the new one is in place.
    """
    configuration = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    filesystem = target.getFileSystem(configuration)
    if filesystem.rename(source, target):
        return
    jvm = spark.sparkContext._jvm
    gateway = spark.sparkContext._gateway
    assert jvm is not None and gateway is not None
    if filesystem.getScheme() == "hdfs":
        context = jvm.org.apache.hadoop.fs.FileContext.getFileContext(target.toUri(), configuration)
        options = gateway.new_array(jvm.org.apache.hadoop.fs.Options.Rename, 1)
        options[0] = jvm.org.apache.hadoop.fs.Options.Rename.OVERWRITE
        context.rename(source, target, options)
        return
    aside = jvm.org.apache.hadoop.fs.Path(f"{target.toString()}.{uuid.uuid4().hex}.old")
    moved_aside = bool(filesystem.exists(target)) and bool(filesystem.rename(target, aside))
    if not filesystem.rename(source, target):
        if moved_aside:
            filesystem.rename(aside, target)
        raise OSError(f"could not move {source.toString()} to {target.toString()}")
    if moved_aside:
        filesystem.delete(aside, False)


def read_bytes(spark: SparkSession, uri: str) -> bytes:
    local = _local_file(uri)
    if local is not None:
        if not local.is_file():
            raise FileNotFoundError(uri)
        return local.read_bytes()
    path, fs = _path_and_fs(spark, uri)
    if not fs.exists(path):
        raise FileNotFoundError(uri)
    length = int(fs.getFileStatus(path).getLen())
    stream = fs.open(path)
    try:
        jvm = spark.sparkContext._jvm
        buffer = jvm.java.io.ByteArrayOutputStream(max(length, 1))  # type: ignore[union-attr]
        jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 65536, False)  # type: ignore[union-attr]
        return bytes(buffer.toByteArray())
    finally:
        stream.close()


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    write_bytes(spark, uri, text.encode("utf-8"))


def read_text(spark: SparkSession, uri: str) -> str:
    return read_bytes(spark, uri).decode("utf-8")


def delete(spark: SparkSession, uri: str) -> None:
    """Remove a file or folder (recursively); nothing happens if it does not exist."""
    path, filesystem = _path_and_fs(spark, uri)
    filesystem.delete(path, True)
