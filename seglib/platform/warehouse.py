"""The store that owns every output table: where it lives, how it is written, how it is registered.

Tables live under `<warehouse_dir>/<database>.db/<table>` and are registered in the Spark catalog as
external tables on that location, so `SELECT ... FROM seg.customer_segments` works in any session
that seglib opens (and in any other session after `register_existing_tables`).

Snapshot tables are partitioned by snapshot_date and rewritten one snapshot at a time: Delta
`replaceWhere` (one atomic commit that replaces exactly that snapshot's rows, and that never conflicts
with a concurrent job writing another snapshot) or, for Parquet, dynamic overwrite of the snapshot's
partition.

With `storage.tables: managed` (Unity Catalog, or any catalog that keeps its tables' files) the
tables are managed Delta tables named `[catalog.]database.table`: created with the table property
`seglib.created_by`, a snapshot replaced by one overwrite-by-filter commit (the V2 form of
`replaceWhere`), no folder or location of seglib's own. `storage.catalog` adds the catalog part to every
name in both modes.

Nothing here writes to, overwrites or drops what seglib did not create: a table folder must be absent,
empty or marked as seglib's (`seglib.ownership`), and a catalog entry of the same name must be an
external table that seglib registered: a Parquet entry with the table property `seglib.created_by`, or
a Delta entry on a marked folder (Delta keeps table properties in its log, not in the catalog); a
managed table must carry the property. Anything else stops the write with `UnsafeWriteError` before a byte is written.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from seglib.contract.config import SeglibConfig, validate_identifier
from seglib.contract.errors import InputDataError, UnsafeWriteError
from seglib.contract.tables import SNAPSHOT_COLUMN
from seglib.contract.uris import join_uri, mask_credentials, resolve_uri, same_location, sql_string
from seglib.platform.files import HadoopFiles
from seglib.platform.ownership import OWNER_PROPERTY, OWNER_VALUE, claim_folder, is_seglib_folder, mark_folder

log = logging.getLogger(__name__)

TableFormat = Literal["delta", "parquet"]
T = TypeVar("T")

# Where this process last registered each table, per Spark application: the catalog's location
# is looked up only for tables this process has not registered at the same place yet.
_REGISTERED: dict[tuple[str, str, str], str] = {}

# Delta's optimistic concurrency: a commit that lost a race with another job's commit fails with one
# of these, and trying again (against the new table version) is the documented remedy.
_CONCURRENT_COMMIT_ERRORS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "ConcurrentWriteException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT_",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
)
COMMIT_ATTEMPTS = 6


def is_concurrent_commit_error(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}"
    return any(marker in text for marker in _CONCURRENT_COMMIT_ERRORS)


def retry_concurrent_commits(action: Callable[[], T], what: str, attempts: int = COMMIT_ATTEMPTS) -> T:
    """Run a Delta commit, again (after a short random wait) when another job's commit won the race."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_concurrent_commit_error(error):
                raise
            wait = random.uniform(0.1, 0.5) * 2 ** (attempt - 1)
            log.warning(
                "%s: a concurrent commit won the race (attempt %d of %d, %s); trying again in %.1fs",
                what, attempt, attempts, type(error).__name__, wait,
            )  # fmt: skip
            time.sleep(wait)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CatalogEntry:
    table_type: str  # MANAGED, EXTERNAL or VIEW
    location: str  # "" when the entry has none or its folder no longer holds the table
    created_by_seglib: bool


@dataclass(frozen=True)
class Warehouse:
    spark: SparkSession
    root: str
    format: TableFormat
    catalog: str | None = None
    managed: bool = False

    @classmethod
    def from_config(cls, spark: SparkSession, config: SeglibConfig) -> Warehouse:
        storage = config.storage
        return cls(
            spark,
            resolve_uri(storage.warehouse_dir),
            storage.format,
            storage.catalog,
            storage.tables == "managed",
        )

    def table_name(self, database: str, table: str) -> str:
        """The quoted `[catalog.]database.table` name, its parts validated before they reach SQL."""
        validate_identifier(database, "database")
        validate_identifier(table, "table")
        return ".".join(f"`{part}`" for part in (self.catalog, database, table) if part is not None)

    def label(self, database: str, table: str) -> str:
        """The name as messages show it: [catalog.]database.table, unquoted."""
        return ".".join(part for part in (self.catalog, database, table) if part is not None)

    def schema_name(self, database: str) -> str:
        validate_identifier(database, "database")
        return ".".join(f"`{part}`" for part in (self.catalog, database) if part is not None)

    def location(self, database: str, table: str) -> str:
        """The folder of an external table (managed tables have none of seglib's)."""
        validate_identifier(database, "database")
        validate_identifier(table, "table")
        return join_uri(self.root, f"{database}.db", table)

    def exists(self, database: str, table: str) -> bool:
        if self.managed:
            return bool(self.spark.catalog.tableExists(self.table_name(database, table)))
        return HadoopFiles(self.spark).exists(self.location(database, table))

    def claim(self, database: str, table: str) -> None:
        """Stop unless this table's folder and catalog entry are seglib's own (or absent)."""
        if self.managed:
            entry = self.catalog_entry(database, table)
            if entry is not None and not entry.created_by_seglib:
                raise UnsafeWriteError(self._foreign_entry_message(database, table, entry))
            return
        location = self.location(database, table)
        if _REGISTERED.get(self._session_key(database, table)) == location and is_seglib_folder(
            self.spark, location
        ):
            return
        entry = self.catalog_entry(database, table)
        if entry is not None and not self._may_repoint(entry, location):
            raise UnsafeWriteError(self._foreign_entry_message(database, table, entry))
        claim_folder(self.spark, location, f"table {database}.{table}")

    def write_snapshot(self, df: DataFrame, database: str, table: str, snapshot: dt.date) -> None:
        """Replace the rows of one snapshot, atomically for Delta; other snapshots are untouched."""
        if SNAPSHOT_COLUMN not in df.columns:
            raise ValueError(f"{database}.{table}: rows to write lack the {SNAPSHOT_COLUMN} column")
        started = time.perf_counter()
        self.claim(database, table)
        self.add_missing_columns(database, table, df.schema)
        claimed = time.perf_counter()
        if self.managed:
            self._write_managed(
                df, database, table, F.col(SNAPSHOT_COLUMN) == F.lit(snapshot), partitioned=True
            )
            log.info("wrote snapshot %s of managed table %s", snapshot, self.label(database, table))
            return
        location = self.location(database, table)
        writer = df.write.format(self.format).mode("overwrite").partitionBy(SNAPSHOT_COLUMN)
        if self.format == "delta":
            writer = writer.option("replaceWhere", f"{SNAPSHOT_COLUMN} = DATE'{snapshot.isoformat()}'")
            retry_concurrent_commits(lambda: writer.save(location), f"writing {database}.{table}")
        else:
            writer.option("partitionOverwriteMode", "dynamic").save(location)
            # Dynamic overwrite replaces only the partitions that receive rows: an empty rewrite of a
            # snapshot must remove the old partition itself.
            if df.isEmpty():
                HadoopFiles(self.spark).delete(
                    join_uri(location, f"{SNAPSHOT_COLUMN}={snapshot.isoformat()}")
                )
        written = time.perf_counter()
        mark_folder(self.spark, location)
        self.register(database, table, df.schema, partitioned=True)
        log.info(
            "wrote snapshot %s of %s.%s (%s) in %.1fs: ownership check %.2fs, computing and committing the "
            "rows %.1fs, marker and catalog %.2fs",
            snapshot, database, table, self.format, time.perf_counter() - started, claimed - started,
            written - claimed, time.perf_counter() - written,
        )  # fmt: skip

    def write_table(self, df: DataFrame, database: str, table: str) -> None:
        """Replace a whole table (one Delta commit; schema may change)."""
        self.claim(database, table)
        if self.managed:
            self.add_missing_columns(database, table, df.schema)
            self._write_managed(df, database, table, F.lit(True), partitioned=False)
            return
        location = self.location(database, table)
        writer = df.write.format(self.format).mode("overwrite")
        if self.format == "delta":
            writer = writer.option("overwriteSchema", "true")
        retry_concurrent_commits(lambda: writer.save(location), f"writing {database}.{table}")
        mark_folder(self.spark, location)  # a Parquet overwrite replaced the whole folder
        self.register(database, table, df.schema, partitioned=False)
        log.info("wrote %s.%s (%s)", database, table, self.format)

    def _write_managed(
        self, df: DataFrame, database: str, table: str, replaced: Column, partitioned: bool
    ) -> None:
        """Create the managed table with seglib's property, or replace the rows `replaced` selects in one
        commit (overwrite by filter: Delta's replaceWhere through the catalog). Call after `claim`."""
        name = self.table_name(database, table)
        if not self.exists(database, table):
            self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self.schema_name(database)}")
            creator = df.writeTo(name).using(self.format).tableProperty(OWNER_PROPERTY, OWNER_VALUE)
            if partitioned:
                creator = creator.partitionedBy(F.col(SNAPSHOT_COLUMN))
            try:
                creator.create()
                return
            except AnalysisException:
                if not self.exists(database, table):
                    raise
                self.claim(database, table)  # another job created it first: replace the rows as below
        retry_concurrent_commits(lambda: df.writeTo(name).overwrite(replaced), f"writing {name}")

    def merge_target(self, database: str, table: str) -> str:
        """The SQL name of a Delta table for MERGE: the catalog name of a managed table, else its path."""
        if self.managed:
            return self.table_name(database, table)
        return f"delta.`{self.location(database, table)}`"

    def add_missing_columns(self, database: str, table: str, schema: StructType) -> None:
        """Columns that this seglib writes and a table written by an older one lacks are added at the end,
        nullable: the older snapshots read them as null, and no table is ever rewritten or dropped for it.
        Call after `claim`."""
        if self.managed:
            if not self.exists(database, table):
                return
            target = self.table_name(database, table)
            existing = self.spark.table(target).columns
        elif self.format == "delta":
            location = self.location(database, table)
            if not HadoopFiles(self.spark).exists(join_uri(location, "_delta_log")):
                return
            existing = self.spark.read.format("delta").load(location).columns
            target = f"delta.`{location}`"
        else:
            if self.catalog_entry(database, table) is None:
                return  # registering it declares the schema of the rows written
            target = self.table_name(database, table)
            existing = self.spark.table(target).columns
        known = {name.lower() for name in existing}
        missing = [field for field in schema if field.name.lower() not in known]
        if not missing:
            return
        log.warning(
            "adding columns %s to %s.%s (written by an earlier seglib); its earlier rows read them as null",
            ", ".join(field.name for field in missing), database, table,
        )  # fmt: skip
        columns = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in missing)
        self.spark.sql(f"ALTER TABLE {target} ADD COLUMNS ({columns})")

    def register(
        self, database: str, table: str, schema: StructType | None = None, partitioned: bool = False
    ) -> None:
        """Register the table's location in the catalog (a no-op when it is registered already).

        Delta keeps the schema in its log; a Parquet folder of an empty, partitioned table holds no
        file to infer it from, so the schema of the rows just written is declared when known.
        """
        if self.managed:
            return  # the catalog holds a managed table from its creation on
        location = self.location(database, table)
        self.spark.sql(
            f"CREATE DATABASE IF NOT EXISTS {self.schema_name(database)} "
            f"LOCATION {sql_string(join_uri(self.root, database + '.db'))}"
        )
        qualified = self.table_name(database, table)
        session_key = self._session_key(database, table)
        if _REGISTERED.get(session_key) != location:
            self._drop_seglib_entry_registered_elsewhere(database, table, location)
        columns, partitioning, properties = "", "", ""
        if self.format == "parquet":
            # Delta keeps table properties in its log (and refuses a CREATE whose properties differ
            # from it); for Parquet the catalog entry itself is where seglib's ownership is recorded.
            properties = f"TBLPROPERTIES ({sql_string(OWNER_PROPERTY)} = {sql_string(OWNER_VALUE)})"
            if schema is not None:
                columns = (
                    "("
                    + ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in schema)
                    + ")"
                )
                partitioning = f"PARTITIONED BY (`{SNAPSHOT_COLUMN}`)" if partitioned else ""
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {qualified} {columns} USING {self.format} {partitioning} "
            f"LOCATION {sql_string(location)} {properties}"
        )
        self.spark.sql(f"REFRESH TABLE {qualified}")
        _REGISTERED[session_key] = location
        if self.format == "parquet" and self._is_partitioned(database, table):
            # A Parquet table's catalog entry lists its partitions: pick up snapshots written since.
            self.spark.sql(f"MSCK REPAIR TABLE {qualified}")

    def _session_key(self, database: str, table: str) -> tuple[str, str, str]:
        return (self.spark.sparkContext.applicationId, database, table)

    def _may_repoint(self, entry: CatalogEntry, location: str) -> bool:
        """An entry at seglib's own location, or one that seglib registered elsewhere, may be (re)used."""
        if entry.table_type != "EXTERNAL":
            return False
        if entry.created_by_seglib:
            return True
        # Delta tables keep no catalog-only property: their entry is seglib's when it points at a
        # folder that seglib created.
        return bool(entry.location) and is_seglib_folder(self.spark, entry.location)

    def _foreign_entry_message(self, database: str, table: str, entry: CatalogEntry) -> str:
        kind = "a managed table" if entry.table_type == "MANAGED" else f"a {entry.table_type.lower()} table"
        where = f" at {mask_credentials(entry.location)}" if entry.location else ""
        return (
            f"{self.label(database, table)} is already in the Spark catalog as {kind}{where} that seglib did not create; "
            "seglib never drops, re-points or writes over a table it did not create. Set storage.database "
            "(or input.database for generated raw tables) to a database of seglib's own, or drop or rename "
            "that table yourself if it is disposable"
        )

    def _drop_seglib_entry_registered_elsewhere(self, database: str, table: str, location: str) -> None:
        entry = self.catalog_entry(database, table)
        if entry is None or (entry.location and same_location(entry.location, location)):
            return
        if not self._may_repoint(entry, location):
            raise UnsafeWriteError(self._foreign_entry_message(database, table, entry))
        # A catalog that outlives a storage.warehouse_dir change (a shared metastore, one session
        # serving two configurations) would otherwise serve the old folder's rows under this name.
        log.warning(
            "%s.%s was registered at %s; pointing it at %s, where this configuration keeps it",
            database, table, mask_credentials(entry.location), mask_credentials(location),
        )  # fmt: skip
        # seglib's external table: only the entry goes.
        self.spark.sql(f"DROP TABLE {self.table_name(database, table)}")

    def catalog_entry(self, database: str, table: str) -> CatalogEntry | None:
        """The catalog's entry of this name (type, location, whether seglib registered it), if any."""
        name = self.table_name(database, table)
        if not self.spark.catalog.tableExists(name):
            return None
        try:
            details = self.spark.sql(f"DESCRIBE TABLE EXTENDED {name}").collect()
        except AnalysisException:  # registered at a folder that no longer holds the table
            table_type = self.spark.catalog.getTable(name).tableType or "EXTERNAL"
            return CatalogEntry(table_type.upper(), "", False)
        names = [row["col_name"] for row in details]
        detail_start = (
            names.index("# Detailed Table Information") if "# Detailed Table Information" in names else 0
        )
        # Only the detail rows: a data column may be called Type or Location too.
        fields = {row["col_name"]: row["data_type"] for row in details[detail_start:]}
        properties = fields.get("Table Properties") or ""
        return CatalogEntry(
            table_type=(fields.get("Type") or "").upper(),
            location=fields.get("Location") or "",
            created_by_seglib=f"{OWNER_PROPERTY}={OWNER_VALUE}" in properties,
        )

    def _is_partitioned(self, database: str, table: str) -> bool:
        return any(
            column.isPartition for column in self.spark.catalog.listColumns(self.table_name(database, table))
        )

    def read(self, database: str, table: str) -> DataFrame:
        if not self.exists(database, table):
            where = "in the catalog" if self.managed else f"under {self.root}"
            raise InputDataError(
                f"table {self.label(database, table)} does not exist {where}; run the stage that writes "
                "it first (for the raw tables: `seg generate`)"
            )
        self.register(database, table)
        return self.spark.table(self.table_name(database, table))

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
        """Register every table found under the database folder (sessions start with an empty catalog);
        managed tables are in the catalog already."""
        if self.managed:
            return []
        folder = join_uri(self.root, f"{database}.db")
        registered = []
        for table in (
            name for name in HadoopFiles(self.spark).list_directories(folder) if _is_identifier(name)
        ):
            if not is_seglib_folder(self.spark, join_uri(folder, table)):
                log.debug("not registering %s.%s: seglib did not create that folder", database, table)
                continue
            try:
                self.register(database, table)
            except UnsafeWriteError as error:  # the name is taken in the catalog by a table not seglib's
                log.warning("not registering %s.%s: %s", database, table, error)
                continue
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
