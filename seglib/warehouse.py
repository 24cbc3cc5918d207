"""The store that owns every output table: where it lives, how it is written, how it is registered.

Tables live under `<warehouse_dir>/<database>.db/<table>` and are registered in the Spark catalog as
external tables on that location, so `SELECT ... FROM seg.customer_segments` works in any session
that seglib opens (and in any other session after `register_existing_tables`).

Snapshot tables are rewritten one snapshot at a time: Delta `replaceWhere` (one atomic commit that
replaces exactly that snapshot's rows) or, for Parquet, dynamic overwrite of the snapshot partition.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import StructType

from seglib import fs
from seglib.config import SeglibConfig, validate_identifier
from seglib.errors import InputDataError
from seglib.paths import join_uri, resolve_uri, same_location

log = logging.getLogger(__name__)

SNAPSHOT_COLUMN = "snapshot_date"
TableFormat = Literal["delta", "parquet"]


# Where this process last registered each table, per Spark application: the catalog's location
# is looked up only for tables this process has not registered at the same place yet.
_REGISTERED: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Warehouse:
    spark: SparkSession
    root: str
    format: TableFormat

    @classmethod
    def from_config(cls, spark: SparkSession, config: SeglibConfig) -> Warehouse:
        return cls(spark, resolve_uri(config.storage.warehouse_dir), config.storage.format)

    def location(self, database: str, table: str) -> str:
        validate_identifier(database, "database")
        validate_identifier(table, "table")
        return join_uri(self.root, f"{database}.db", table)

    def exists(self, database: str, table: str) -> bool:
        return fs.exists(self.spark, self.location(database, table))

    def write_snapshot(self, df: DataFrame, database: str, table: str, snapshot: dt.date) -> None:
        """Replace the rows of one snapshot, atomically for Delta; other snapshots are untouched."""
        if SNAPSHOT_COLUMN not in df.columns:
            raise ValueError(f"{database}.{table}: rows to write lack the {SNAPSHOT_COLUMN} column")
        location = self.location(database, table)
        writer = df.write.format(self.format).mode("overwrite")
        if self.format == "delta":
            writer = writer.option("replaceWhere", f"{SNAPSHOT_COLUMN} = DATE'{snapshot.isoformat()}'")
        else:
            writer = writer.partitionBy(SNAPSHOT_COLUMN).option("partitionOverwriteMode", "dynamic")
        writer.save(location)
        self.register(database, table, df.schema, partitioned=True)
        log.info("wrote snapshot %s of %s.%s (%s)", snapshot, database, table, self.format)

    def write_table(self, df: DataFrame, database: str, table: str) -> None:
        """Replace a whole table (one Delta commit; schema may change)."""
        location = self.location(database, table)
        writer = df.write.format(self.format).mode("overwrite")
        if self.format == "delta":
            writer = writer.option("overwriteSchema", "true")
        writer.save(location)
        self.register(database, table, df.schema, partitioned=False)
        log.info("wrote %s.%s (%s)", database, table, self.format)

    def register(
        self, database: str, table: str, schema: StructType | None = None, partitioned: bool = False
    ) -> None:
        """Register the table's location in the catalog (a no-op when it is registered already).

        Delta keeps the schema in its log; a Parquet folder of an empty, partitioned table holds no
        file to infer it from, so the schema of the rows just written is declared when known.
        """
        location = self.location(database, table)
        self.spark.sql(
            f"CREATE DATABASE IF NOT EXISTS `{database}` LOCATION '{join_uri(self.root, database + '.db')}'"
        )
        qualified = f"`{database}`.`{table}`"
        session_key = (self.spark.sparkContext.applicationId, database, table)
        if _REGISTERED.get(session_key) != location:
            self._drop_entry_registered_elsewhere(database, table, location)
        columns, partitioning = "", ""
        if self.format == "parquet" and schema is not None:
            columns = (
                "(" + ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in schema) + ")"
            )
            partitioning = f"PARTITIONED BY (`{SNAPSHOT_COLUMN}`)" if partitioned else ""
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {qualified} {columns} USING {self.format} {partitioning} "
            f"LOCATION '{location}'"
        )
        self.spark.sql(f"REFRESH TABLE {qualified}")
        _REGISTERED[session_key] = location
        if self.format == "parquet" and self._is_partitioned(database, table):
            # A Parquet table's catalog entry lists its partitions: pick up snapshots written since.
            self.spark.sql(f"MSCK REPAIR TABLE {qualified}")

    def _drop_entry_registered_elsewhere(self, database: str, table: str, location: str) -> None:
        registered_at = self._registered_location(database, table)
        if registered_at is None or same_location(registered_at, location):
            return
        # A catalog that outlives a storage.warehouse_dir change (a shared metastore, one session
        # serving two configurations) would otherwise serve the old folder's rows under this name.
        log.warning(
            "%s.%s was registered at %s; pointing it at %s, where this configuration keeps it",
            database, table, registered_at, location,
        )  # fmt: skip
        self.spark.sql(f"DROP TABLE `{database}`.`{table}`")  # external table: only the catalog entry goes

    def _registered_location(self, database: str, table: str) -> str | None:
        if not self.spark.catalog.tableExists(table, database):
            return None
        try:
            details = self.spark.sql(f"DESCRIBE TABLE EXTENDED `{database}`.`{table}`").collect()
        except AnalysisException:
            return ""  # registered at a folder that no longer holds the table
        return next((row["data_type"] for row in details if row["col_name"] == "Location"), "")

    def _is_partitioned(self, database: str, table: str) -> bool:
        return any(column.isPartition for column in self.spark.catalog.listColumns(f"`{database}`.`{table}`"))

    def read(self, database: str, table: str) -> DataFrame:
        if not self.exists(database, table):
            raise InputDataError(
                f"table {database}.{table} does not exist under {self.root}; run the stage that writes it "
                "first (for the raw tables: `seg generate`)"
            )
        self.register(database, table)
        return self.spark.table(f"`{database}`.`{table}`")

    def snapshot_rows(self, database: str, table: str, snapshot: dt.date) -> DataFrame:
        """The table's rows of one snapshot (possibly none); the table must exist."""
        return self.read(database, table).where(f"{SNAPSHOT_COLUMN} = DATE'{snapshot.isoformat()}'")

    def optional_snapshot_rows(self, database: str, table: str, snapshot: dt.date) -> list[Row]:
        """The snapshot's rows, collected; none when the table was never written (optional tables)."""
        if not self.exists(database, table):
            return []
        return self.snapshot_rows(database, table, snapshot).collect()

    def read_snapshot(self, database: str, table: str, snapshot: dt.date) -> DataFrame:
        df = self.snapshot_rows(database, table, snapshot)
        if df.isEmpty():
            raise InputDataError(
                f"table {database}.{table} holds no rows for snapshot {snapshot}; run the stage that writes "
                "it for this snapshot first, or set features.snapshot_date to a snapshot it holds"
            )
        return df

    def register_existing_tables(self, database: str) -> list[str]:
        """Register every table found under the database folder (sessions start with an empty catalog)."""
        folder = join_uri(self.root, f"{database}.db")
        registered = []
        for table in (name for name in fs.list_directories(self.spark, folder) if _is_identifier(name)):
            try:
                self.register(database, table)
            except AnalysisException as error:
                if self.format != "parquet":
                    raise
                # An empty Parquet table (no file to infer a schema from) is registered by its next write.
                log.debug("not registering empty Parquet table %s.%s: %s", database, table, error)
                continue
            registered.append(table)
        return registered


def _is_identifier(name: str) -> bool:
    try:
        validate_identifier(name, "table")
    except ValueError:
        return False
    return True
