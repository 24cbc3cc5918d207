"""Small files (metadata, model weights) on any Hadoop filesystem the session can reach.

Going through Spark's Hadoop configuration means the same code writes to a local folder, HDFS,
S3 (s3a://), ADLS (abfss://) or DBFS, with the credentials the cluster already has.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


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


def write_bytes(spark: SparkSession, uri: str, payload: bytes) -> None:
    """Write a whole file: to a temporary name first, then renamed, so readers never see half a file."""
    path, fs = _path_and_fs(spark, uri)
    jvm = spark.sparkContext._jvm
    temporary = jvm.org.apache.hadoop.fs.Path(uri + ".tmp")  # type: ignore[union-attr]
    stream = fs.create(temporary, True)
    try:
        stream.write(bytearray(payload))
    finally:
        stream.close()
    if fs.exists(path):
        fs.delete(path, False)
    if not fs.rename(temporary, path):
        raise OSError(f"could not move {uri}.tmp to {uri}")


def read_bytes(spark: SparkSession, uri: str) -> bytes:
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
