"""Small files (metadata, pointers, model weights, checkpoints): one `FileStore` interface, two stores.

- `HadoopFiles(spark)` on the driver goes through the session's Hadoop configuration, so the same code
  writes to a local folder, HDFS, S3 (s3a://), ADLS (abfss://) or DBFS with the credentials the
  cluster already has.
- `FsspecFiles()` on executors (training checkpoints), where there is no JVM gateway: a local path,
  file://, hdfs://, s3://, abfss://, gs://, and dbfs:/ (Databricks' FUSE mount at /dbfs).

Both write a whole file under a temporary name of its own, then rename it over the old one: a reader
sees the old or the new file, never half a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

from seglib.contract.uris import local_path


class FileStore(Protocol):
    """Whole small files by URI. Every write is atomic; listing skips temporary files. The stores below
    subclass it, so mypy refuses one that lacks a method without a body here; text is UTF-8 over the bytes."""

    def exists(self, uri: str) -> bool: ...

    def read_bytes(self, uri: str) -> bytes: ...

    def write_bytes(self, uri: str, payload: bytes) -> None: ...

    def list_names(self, uri: str) -> list[str]: ...

    def delete(self, uri: str) -> None: ...

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))


def _local_file(uri: str) -> Path | None:
    """The local path of a file: URI (or plain path); None for other filesystems."""
    try:
        return local_path(uri)
    except ValueError:
        return None


class HadoopFiles(FileStore):
    """Files through the session's Hadoop filesystems (the driver's store).

    Local paths (a laptop, and on Databricks the /Volumes and /dbfs mounts) go through Python's own file
    API; the JVM gateway is reached only for remote schemes, which PySpark offers no public API to read.
    """

    def __init__(self, spark: SparkSession, *, local_paths_in_python: bool = True) -> None:
        self.spark = spark
        # False sends local paths through Hadoop too: how tests exercise the remote-filesystem code.
        self.local_paths_in_python = local_paths_in_python

    def _local(self, uri: str) -> Path | None:
        return _local_file(uri) if self.local_paths_in_python else None

    def _path_and_fs(self, uri: str) -> tuple[Any, Any]:
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None, "the SparkSession has no JVM gateway"
        path = jvm.org.apache.hadoop.fs.Path(uri)
        configuration = self.spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        return path, path.getFileSystem(configuration)

    def exists(self, uri: str) -> bool:
        local = self._local(uri)
        if local is not None:
            return local.exists()
        path, filesystem = self._path_and_fs(uri)
        return bool(filesystem.exists(path))

    def list_names(self, uri: str) -> list[str]:
        """Names of the entries directly under `uri` (no temporary ones), sorted; empty when it does not exist."""
        local = self._local(uri)
        if local is not None:
            # Hadoop's local filesystem hides its .crc side files; so does this listing.
            entries = [entry.name for entry in local.iterdir()] if local.is_dir() else []
            return sorted(name for name in entries if not name.endswith((".tmp", ".crc")))
        path, filesystem = self._path_and_fs(uri)
        if not filesystem.exists(path):
            return []
        names = (status.getPath().getName() for status in filesystem.listStatus(path))
        return sorted(name for name in names if not name.endswith(".tmp"))

    def list_directories(self, uri: str) -> list[str]:
        """Names of the sub-directories of `uri`, sorted; empty when `uri` does not exist."""
        local = self._local(uri)
        if local is not None:
            return sorted(entry.name for entry in local.iterdir() if entry.is_dir()) if local.is_dir() else []
        path, filesystem = self._path_and_fs(uri)
        if not filesystem.exists(path):
            return []
        return sorted(
            status.getPath().getName() for status in filesystem.listStatus(path) if status.isDirectory()
        )

    def is_empty_directory(self, uri: str) -> bool:
        """Whether `uri` is an existing folder with nothing in it."""
        local = self._local(uri)
        if local is not None:
            return local.is_dir() and next(local.iterdir(), None) is None
        path, filesystem = self._path_and_fs(uri)
        return (
            bool(filesystem.exists(path))
            and bool(filesystem.getFileStatus(path).isDirectory())
            and len(filesystem.listStatus(path)) == 0
        )

    def write_bytes(self, uri: str, payload: bytes) -> None:
        local = self._local(uri)
        if local is not None:
            # os.replace is one atomic rename. Hadoop's local filesystem renames a checksum side file
            # separately, and two writers racing could leave one's data beside the other's checksum.
            local.parent.mkdir(parents=True, exist_ok=True)
            temporary_file = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
            temporary_file.write_bytes(payload)
            os.replace(temporary_file, local)
            local.with_name(f".{local.name}.crc").unlink(missing_ok=True)  # left by a Hadoop write
            return
        path, filesystem = self._path_and_fs(uri)
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None
        # A name per write: two writers of one pointer never share (or delete) each other's temporary file.
        temporary = jvm.org.apache.hadoop.fs.Path(f"{uri}.{uuid.uuid4().hex}.tmp")
        stream = filesystem.create(temporary, True)
        try:
            stream.write(bytearray(payload))
        finally:
            stream.close()
        try:
            self._rename_over(temporary, path)
        except Exception:
            filesystem.delete(temporary, False)
            raise

    def _rename_over(self, source: Any, target: Any) -> None:
        """Replace `target` by `source` in one step where the filesystem can.

        HDFS refuses a plain rename onto an existing file (returns false) but replaces it atomically with
        FileContext's OVERWRITE option. Elsewhere (object stores) FileContext's generic overwrite is a
        delete then a rename, so the old file is moved aside first and kept until the new one is in place.
        """
        configuration = self.spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        filesystem = target.getFileSystem(configuration)
        if filesystem.rename(source, target):
            return
        jvm = self.spark.sparkContext._jvm
        gateway = self.spark.sparkContext._gateway
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

    def read_bytes(self, uri: str) -> bytes:
        local = self._local(uri)
        if local is not None:
            if not local.is_file():
                raise FileNotFoundError(uri)
            return local.read_bytes()
        path, filesystem = self._path_and_fs(uri)
        if not filesystem.exists(path):
            raise FileNotFoundError(uri)
        length = int(filesystem.getFileStatus(path).getLen())
        stream = filesystem.open(path)
        try:
            jvm = self.spark.sparkContext._jvm
            buffer = jvm.java.io.ByteArrayOutputStream(max(length, 1))  # type: ignore[union-attr]
            jvm.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 65536, False)  # type: ignore[union-attr]
            return bytes(buffer.toByteArray())
        finally:
            stream.close()

    def delete(self, uri: str) -> None:
        """Remove a file or folder (recursively); nothing happens if it does not exist."""
        local = self._local(uri)
        if local is not None:
            if local.is_dir() and not local.is_symlink():
                shutil.rmtree(local)
            else:
                local.unlink(missing_ok=True)
            return
        path, filesystem = self._path_and_fs(uri)
        filesystem.delete(path, True)


class FsspecFiles(FileStore):
    """Files through fsspec, for code without a Spark session (executors)."""

    @staticmethod
    def _filesystem(uri: str) -> tuple[Any, str]:
        import fsspec

        if uri.startswith("dbfs:/"):
            uri = "/dbfs/" + uri.removeprefix("dbfs:/").lstrip("/")
        filesystem, path = fsspec.core.url_to_fs(uri)
        return filesystem, path

    def exists(self, uri: str) -> bool:
        filesystem, path = self._filesystem(uri)
        return bool(filesystem.exists(path))

    def write_bytes(self, uri: str, payload: bytes) -> None:
        filesystem, path = self._filesystem(uri)
        filesystem.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"  # never shared by two writers of one file
        with filesystem.open(temporary, "wb") as stream:
            stream.write(payload)
        filesystem.mv(temporary, path)

    def read_bytes(self, uri: str) -> bytes:
        filesystem, path = self._filesystem(uri)
        with filesystem.open(path, "rb") as stream:
            return bytes(stream.read())

    def list_names(self, uri: str) -> list[str]:
        filesystem, path = self._filesystem(uri)
        if not filesystem.exists(path):
            return []
        names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in filesystem.ls(path, detail=False))
        return sorted(name for name in names if not name.endswith(".tmp"))

    def delete(self, uri: str) -> None:
        filesystem, path = self._filesystem(uri)
        if filesystem.exists(path):
            filesystem.rm(path, recursive=True)
