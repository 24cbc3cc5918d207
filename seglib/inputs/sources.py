"""Reading the user's raw tables under their own column names: check them, validate rows.

Config maps each role (customer id, timestamp, amount, ...) to the user's column. Reading a table
yields a *canonical* frame whose columns are named after the roles and cast to one type per role,
plus the original row (kept for the quarantine). Only the transactions table is required; a role
mapped to null, or a table set to null, just leaves out the features that need it.

Schema problems (missing column, a type that cannot be cast, an empty table, a snapshot outside the
data's dates) stop the job with the table, the column and the fix. Row problems quarantine the row.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglib.contract.config import (
    CustomersInput,
    EventsInput,
    SeglibConfig,
    SourceConfig,
    TransactionsInput,
)
from seglib.contract.errors import InputDataError
from seglib.contract.uris import quote_identifier
from seglib.inputs.validation import (
    SOURCE_ROW,
    ValidatedTable,
    customer_rules,
    event_rules,
    transaction_rules,
    validate_rows,
)
from seglib.platform.ownership import claim_folder, mark_folder
from seglib.platform.warehouse import Warehouse

log = logging.getLogger(__name__)

Kind = Literal["id", "timestamp", "date", "number", "label", "flag"]
TableRole = Literal["transactions", "customers", "events"]
# DataFrames given by a caller (the Python API) in place of the configured sources, by table role.
InputFrames = Mapping[TableRole, DataFrame]

# What each role holds once canonical.
ROLE_KINDS: dict[TableRole, dict[str, Kind]] = {
    "transactions": {
        "customer_id": "id",
        "timestamp": "timestamp",
        "amount": "number",
        "transaction_id": "id",
        "order_id": "id",
        "quantity": "number",
        "category": "label",
        "channel": "label",
        "discount": "number",
        "is_return": "flag",
    },
    "customers": {
        "customer_id": "id",
        "signup_date": "date",
        "age": "number",
        "birth_date": "date",
        "gender": "label",
        "region": "label",
    },
    "events": {
        "customer_id": "id",
        "timestamp": "timestamp",
        "session_id": "id",
        "event_type": "label",
        "category": "label",
    },
}

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMERIC = (*_INTEGRAL, T.FloatType, T.DoubleType, T.DecimalType)
_TEMPORAL = (T.TimestampType, T.TimestampNTZType, T.DateType)
ACCEPTED_TYPES: dict[Kind, tuple[type, ...]] = {
    "id": (*_INTEGRAL, T.StringType),
    "timestamp": (*_TEMPORAL, T.StringType),
    "date": (*_TEMPORAL, T.StringType),
    "number": (*_NUMERIC, T.StringType),
    "label": (*_NUMERIC, T.StringType, T.BooleanType),
    "flag": (T.BooleanType, *_INTEGRAL, T.StringType),
}
_TRUE_WORDS = ("true", "t", "yes", "y", "1")
_FALSE_WORDS = ("false", "f", "no", "n", "0")

TableConfig = TransactionsInput | CustomersInput | EventsInput


def source_label(source: SourceConfig, default_database: str) -> str:
    """How messages name a source: `database.table`, or `format:path`."""
    if source.format == "table":
        assert source.name is not None
        return source.name if "." in source.name else f"{default_database}.{source.name}"
    return f"{source.format}:{source.path}"


def _table_exists(spark: SparkSession, name: str) -> bool:
    try:
        return bool(spark.catalog.tableExists(name))
    except AnalysisException:  # a catalog this session does not know
        return False


def warehouse_parts(warehouse: Warehouse, label: str) -> tuple[str, str]:
    """(database, table) of a table source in seglib's warehouse; a three-level name must be in its
    catalog (storage.catalog), since seglib writes and registers tables there only."""
    parts = label.split(".")
    if len(parts) == 3:
        if parts[0] != warehouse.catalog:
            raise InputDataError(
                f"table {label} is not in the Spark catalog, and seglib's own tables are in catalog "
                f"{warehouse.catalog or '(the current one)'} (storage.catalog); point the source at an "
                "existing table, or set storage.catalog to its catalog"
            )
        parts = parts[1:]
    return parts[0], parts[1]


def read_source(
    spark: SparkSession, warehouse: Warehouse, source: SourceConfig, default_database: str
) -> DataFrame:
    """The source as a DataFrame: a catalog table (or one seglib wrote under warehouse_dir), or files."""
    label = source_label(source, default_database)
    if source.format == "table":
        quoted = ".".join(f"`{part}`" for part in label.split("."))
        if _table_exists(spark, quoted):
            return spark.table(quoted)
        database, table = warehouse_parts(warehouse, label)
        if warehouse.exists(database, table):
            return warehouse.read(database, table)
        raise InputDataError(
            f"table {label} is neither in the Spark catalog nor under {warehouse.root}; "
            "run `seg generate`, or point the input's source at your table or files"
        )
    assert source.path is not None
    reader = spark.read.options(**source.options)
    try:
        if source.format == "csv":
            reader = reader.option("header", source.options.get("header", "true"))
            if source.csv_schema:
                reader = reader.schema(source.csv_schema)
            return reader.csv(source.path)
        return reader.format(source.format).load(source.path)
    except Exception as error:  # AnalysisException (path missing) or a bad schema string
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputDataError(f"cannot read {label}: {first_line}") from None


def claim_source(
    spark: SparkSession, warehouse: Warehouse, source: SourceConfig, default_database: str
) -> None:
    """Stop (UnsafeWriteError) unless `source` is absent or was written by seglib: nothing else is ever
    overwritten, whatever the configuration says."""
    label = source_label(source, default_database)
    if source.format == "table":
        warehouse.claim(*warehouse_parts(warehouse, label))
        return
    assert source.path is not None
    claim_folder(spark, source.path, f"the {source.format} source")


def write_source(df: DataFrame, warehouse: Warehouse, source: SourceConfig, default_database: str) -> None:
    """Write a frame where `source` reads from (the synthetic generator writes through this); only to
    a location that `claim_source` allows, marked as seglib's afterwards."""
    label = source_label(source, default_database)
    if source.format == "table":
        warehouse.write_table(df, *warehouse_parts(warehouse, label))
        return
    assert source.path is not None
    claim_folder(warehouse.spark, source.path, f"the {source.format} source")
    writer = df.write.mode("overwrite").options(**source.options)
    if source.format == "csv":
        writer.option("header", source.options.get("header", "true")).csv(source.path)
    elif source.format == "delta":
        writer.format("delta").option("overwriteSchema", "true").save(source.path)
    else:
        writer.format("parquet").save(source.path)
    mark_folder(warehouse.spark, source.path)


def mapped_columns(table: TableConfig) -> dict[str, str]:
    """Role -> the user's column, for the roles this table has (null mappings left out)."""
    return {role: column for role, column in table.columns if column is not None}


def _cast(column: Column, data_type: T.DataType, kind: Kind, pattern: str | None) -> Column:
    is_string = isinstance(data_type, T.StringType)
    if kind == "id":
        return F.nullif(F.trim(column.cast("string")), F.lit(""))
    if kind == "timestamp":
        if is_string:
            text = F.nullif(F.trim(column), F.lit(""))
            return F.to_timestamp(text, pattern) if pattern else text.cast("timestamp")
        return column.cast("timestamp")
    if kind == "date":
        if is_string:
            text = F.nullif(F.trim(column), F.lit(""))
            return F.to_date(text, pattern) if pattern else text.cast("date")
        return F.to_date(column)
    if kind == "number":
        return (F.nullif(F.trim(column), F.lit("")) if is_string else column).cast("double")
    if kind == "label":
        return F.nullif(F.trim(column.cast("string")), F.lit(""))
    if isinstance(data_type, T.BooleanType):
        return column
    if is_string:
        word = F.lower(F.trim(column))
        return F.when(word.isin(*_TRUE_WORDS), True).when(word.isin(*_FALSE_WORDS), False)
    return column != 0


def canonical_frame(
    df: DataFrame,
    label: str,
    role: TableRole,
    columns: dict[str, str],
    pattern: str | None,
    attributes: dict[str, Kind] | None = None,
) -> DataFrame:
    """Canonical columns (one per mapped role, plus `attr_<name>` attributes) and the original row.

    Raises InputDataError naming the table, the column and the fix for a missing or uncastable column.
    """
    fields = {field.name: field.dataType for field in df.schema.fields}
    wanted: list[tuple[str, str, Kind]] = [
        (canonical, source, ROLE_KINDS[role][canonical]) for canonical, source in columns.items()
    ]
    wanted += [(f"attr_{name}", name, kind) for name, kind in (attributes or {}).items()]
    selected = []
    for canonical, source, kind in wanted:
        if source not in fields:
            raise InputDataError(
                f"table {label} ({role}) has no column {source!r} for {canonical}; its columns are "
                f"{sorted(fields)}. Map {canonical} to the right column in input.{role}.columns"
                + (", or to null if the table has none" if canonical not in REQUIRED_ROLES[role] else "")
            )
        data_type = fields[source]
        if not isinstance(data_type, ACCEPTED_TYPES[kind]):
            accepted = ", ".join(
                sorted({t.__name__.removesuffix("Type").lower() for t in ACCEPTED_TYPES[kind]})
            )
            raise InputDataError(
                f"table {label} ({role}) column {source!r} ({canonical}) has type {data_type.simpleString()}, "
                f"which cannot be read as a {kind}; expected one of: {accepted}. Cast it in the source "
                "table or a view, or map another column"
            )
        selected.append(_cast(F.col(quote_identifier(source)), data_type, kind, pattern).alias(canonical))
    original = F.struct(*[F.col(quote_identifier(name)) for name in df.columns]).alias(SOURCE_ROW)
    return df.select(*selected, original)


REQUIRED_ROLES: dict[TableRole, tuple[str, ...]] = {
    "transactions": ("customer_id", "timestamp", "amount"),
    "customers": ("customer_id",),
    "events": ("customer_id", "timestamp"),
}


@dataclass(frozen=True)
class InputTables:
    """Accepted canonical rows of each table (None when the table is not configured) and the rejects."""

    transactions: DataFrame
    customers: DataFrame | None
    events: DataFrame | None
    rejected: DataFrame
    counts: dict[str, dict[str, int]]
    transactions_label: str = ""  # the key of the transactions table in `counts`
    transactions_have_time_of_day: bool = True  # False for a date-only log


def _attribute_kinds(customers: CustomersInput) -> dict[str, Kind]:
    kinds: dict[str, Kind] = {name: "label" for name in customers.categorical_attributes}
    kinds.update({name: "number" for name in customers.numeric_attributes})
    return kinds


def _load(
    spark: SparkSession,
    warehouse: Warehouse,
    config: SeglibConfig,
    role: TableRole,
    table: TableConfig,
    pattern: str | None,
    frames: InputFrames,
) -> tuple[str, DataFrame]:
    if role in frames:
        label, raw = f"dataframe:{role}", frames[role]
    else:
        label = source_label(table.source, config.input.database)
        raw = read_source(spark, warehouse, table.source, config.input.database)
    attributes = _attribute_kinds(table) if isinstance(table, CustomersInput) else None
    return label, canonical_frame(raw, label, role, mapped_columns(table), pattern, attributes)


def require_rows(validated: ValidatedTable, role: TableRole) -> ValidatedTable:
    """Stop on an empty table; the validation tally has already counted its rows."""
    if validated.input_rows == 0:
        raise InputDataError(
            f"table {validated.name} ({role}) is empty; point input.{role}.source at a table with rows"
            + (", or set input." + role + " to null if you have none" if role != "transactions" else "")
        )
    return validated


def check_snapshot_range(validated: ValidatedTable, snapshot: dt.date, grace_days: int) -> None:
    """Stop when the snapshot lies before the transactions start or long after they end."""
    if validated.first_day is None or validated.last_day is None:
        raise InputDataError(
            f"table {validated.name} (transactions) has no row with a readable timestamp; check the "
            "timestamp column mapping and input.transactions.timestamp_format"
        )
    first, last = validated.first_day, validated.last_day
    if snapshot < first:
        raise InputDataError(
            f"features.snapshot_date {snapshot} is before the first transaction in {validated.name} "
            f"({first}); set it between {first} and {last}"
        )
    if (snapshot - last).days > grace_days:
        raise InputDataError(
            f"features.snapshot_date {snapshot} is {(snapshot - last).days} days after the last transaction "
            f"in {validated.name} ({last}), more than features.snapshot_grace_days={grace_days}; the data "
            f"may be stale. Set the snapshot between {first} and {last}, or raise the grace period"
        )


def read_inputs(spark: SparkSession, config: SeglibConfig, frames: InputFrames | None = None) -> InputTables:
    """Read, check the columns of, and validate the rows of every configured raw table; a table whose
    role is in `frames` is that DataFrame instead of its configured source (columns mapped the same)."""
    frames = frames or {}
    warehouse = Warehouse.from_config(spark, config)
    snapshot, timezone = config.features.snapshot_date, config.features.timezone
    settings = config.input
    validated: dict[TableRole, ValidatedTable] = {}

    label, frame = _load(spark, warehouse, config, "transactions", settings.transactions,
                         settings.transactions.timestamp_format, frames)  # fmt: skip
    validated["transactions"] = require_rows(
        validate_rows(
            frame, label, transaction_rules(frame.columns, snapshot, timezone), time_column="timestamp"
        ),
        "transactions",
    )
    check_snapshot_range(validated["transactions"], snapshot, config.features.snapshot_grace_days)
    if settings.customers is not None:
        label, frame = _load(
            spark, warehouse, config, "customers", settings.customers, settings.customers.date_format, frames
        )
        validated["customers"] = require_rows(
            validate_rows(
                frame,
                label,
                customer_rules(
                    frame.columns,
                    snapshot,
                    tuple(f"attr_{name}" for name in settings.customers.numeric_attributes),
                ),
            ),
            "customers",
        )
    if settings.events is not None:
        label, frame = _load(
            spark, warehouse, config, "events", settings.events, settings.events.timestamp_format, frames
        )
        validated["events"] = require_rows(
            validate_rows(frame, label, event_rules(frame.columns, snapshot, timezone)), "events"
        )
    rejected = functools.reduce(DataFrame.unionByName, [table.rejected for table in validated.values()])
    return InputTables(
        transactions=validated["transactions"].accepted,
        customers=validated["customers"].accepted if "customers" in validated else None,
        events=validated["events"].accepted if "events" in validated else None,
        rejected=rejected,
        counts={table.name: table.counts for table in validated.values()},
        transactions_label=validated["transactions"].name,
        transactions_have_time_of_day=validated["transactions"].has_time_of_day,
    )
