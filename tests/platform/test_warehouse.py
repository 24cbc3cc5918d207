from __future__ import annotations

import datetime as dt
import threading

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

from seglib.contract.errors import InputDataError, UnsafeWriteError
from seglib.platform.files import HadoopFiles
from seglib.platform.warehouse import Warehouse

DAY_1 = dt.date(2025, 1, 31)
DAY_2 = dt.date(2025, 2, 28)


# How a test's tables are stored: external Delta or Parquet folders, or managed Delta tables with
# three-level names in Spark's own catalog (as in a Unity Catalog workspace).
STORAGE_MODES = {
    "delta": ["storage.format=delta"],
    "parquet": ["storage.format=parquet"],
    "managed": ["storage.format=delta", "storage.tables=managed", "storage.catalog=spark_catalog"],
}


def snapshot_rows(spark, snapshot, values):
    return spark.createDataFrame(
        [(index, value, snapshot) for index, value in enumerate(values)],
        "customer_id long, value double, snapshot_date date",
    )


@pytest.mark.parametrize("table_format", list(STORAGE_MODES))
def test_rewriting_a_snapshot_replaces_its_rows_and_keeps_the_others(spark, make_config, table_format):
    config = make_config(*STORAGE_MODES[table_format])
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0, 2.0, 3.0]), database, "scores", DAY_1)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_2, [4.0, 5.0]), database, "scores", DAY_2)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [7.0, 8.0, 9.0]), database, "scores", DAY_1)

    rows = spark.sql(
        f"SELECT snapshot_date, count(*) AS n, sum(value) AS total FROM {database}.scores GROUP BY 1 ORDER BY 1"
    ).collect()
    assert [(row["snapshot_date"], row["n"], row["total"]) for row in rows] == [
        (DAY_1, 3, 24.0),
        (DAY_2, 2, 9.0),
    ]


@pytest.mark.parametrize("table_format", list(STORAGE_MODES))
def test_columns_a_newer_seglib_writes_are_added_and_read_as_null_in_older_snapshots(
    spark, make_config, table_format
):
    config = make_config(*STORAGE_MODES[table_format])
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0, 2.0]), database, "scores", DAY_1)
    wider = snapshot_rows(spark, DAY_2, [4.0]).withColumn("expected_spend", F.lit(12.5))
    warehouse.write_snapshot(wider, database, "scores", DAY_2)
    rows = spark.sql(f"SELECT * FROM {database}.scores ORDER BY snapshot_date, customer_id").collect()
    columns = set(spark.table(f"{database}.scores").columns)
    assert columns == {"customer_id", "value", "snapshot_date", "expected_spend"}
    assert [(row["snapshot_date"], row["value"], row["expected_spend"]) for row in rows] == [
        (DAY_1, 1.0, None), (DAY_1, 2.0, None), (DAY_2, 4.0, 12.5),
    ]  # fmt: skip
    # The older snapshot rewritten with the new columns, and a rewrite without a change, keep working.
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [3.0]).withColumn("expected_spend", F.lit(1.0)), database, "scores", DAY_1)  # fmt: skip
    warehouse.write_snapshot(wider, database, "scores", DAY_2)
    assert spark.sql(f"SELECT sum(expected_spend) FROM {database}.scores").first()[0] == 13.5


def test_delta_snapshot_rewrite_is_one_commit_each(spark, make_config):
    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    for values in ([1.0], [2.0], [3.0]):
        warehouse.write_snapshot(snapshot_rows(spark, DAY_1, values), database, "scores", DAY_1)
    history = spark.sql(f"DESCRIBE HISTORY {database}.scores").collect()
    assert len(history) == 3
    assert spark.table(f"{database}.scores").collect()[0]["value"] == 3.0


def test_tables_written_earlier_are_registered_again_in_a_fresh_catalog(spark, make_config):
    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), database, "first", DAY_1)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), database, "second", DAY_1)
    spark.sql(f"DROP TABLE {database}.first")  # external table: the data stays
    spark.sql(f"DROP TABLE {database}.second")
    assert warehouse.register_existing_tables(database) == ["first", "second"]
    assert spark.table(f"{database}.second").count() == 1


def test_reading_a_missing_table_says_which_stage_to_run(spark, make_config):
    config = make_config()
    with pytest.raises(InputDataError, match=r"table .*\.customer_segments does not exist"):
        Warehouse.from_config(spark, config).read(config.storage.database, "customer_segments")


def test_reading_a_missing_snapshot_names_the_snapshot(spark, make_config):
    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), config.storage.database, "scores", DAY_1)
    with pytest.raises(InputDataError, match="no rows for snapshot 2025-02-28"):
        warehouse.read_snapshot(config.storage.database, "scores", DAY_2)


def test_table_names_are_validated_before_they_reach_sql(spark, make_config):
    warehouse = Warehouse.from_config(spark, make_config())
    with pytest.raises(ValueError, match="not a valid identifier"):
        warehouse.location("seg", "x` USING parquet --")


@pytest.mark.parametrize("table_format", list(STORAGE_MODES))
def test_whole_tables_are_replaced_and_readable_through_the_catalog(spark, make_config, table_format):
    config = make_config(*STORAGE_MODES[table_format])
    warehouse = Warehouse.from_config(spark, config)
    database = config.input.database
    people = spark.createDataFrame([(1, "a"), (2, "b")], "customer_id long, name string")
    warehouse.write_table(people, database, "people")
    warehouse.write_table(people.where("customer_id = 2"), database, "people")
    assert [row["name"] for row in spark.table(f"{database}.people").collect()] == ["b"]
    assert warehouse.read(database, "people").count() == 1


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_a_table_registered_under_another_warehouse_folder_is_pointed_at_this_one(
    spark, make_config, table_format, tmp_path
):
    first = make_config(f"storage.format={table_format}")
    database = first.input.database
    second = first.model_copy(
        update={"storage": first.storage.model_copy(update={"warehouse_dir": str(tmp_path / "moved")})}
    )
    Warehouse.from_config(spark, first).write_table(
        spark.createDataFrame([(1, "old")], "customer_id long, name string"), database, "people"
    )
    moved = Warehouse.from_config(spark, second)
    moved.write_table(
        spark.createDataFrame([(2, "new")], "customer_id long, name string"), database, "people"
    )
    assert [row["name"] for row in spark.table(f"{database}.people").collect()] == ["new"]
    assert [row["name"] for row in moved.read(database, "people").collect()] == ["new"]


def _fail_on_the_last_row(customer_id: int) -> float:
    if customer_id == 399:
        raise RuntimeError("simulated failure half-way through the write")
    return 1.0


def numbered_rows(spark, snapshot, value):
    """400 rows in 4 partitions (4 files), every value the same."""
    return spark.range(400, numPartitions=4).select(
        F.col("id").alias("customer_id"),
        F.lit(float(value)).alias("value"),
        F.lit(snapshot).alias("snapshot_date"),
    )


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_a_write_that_fails_half_way_leaves_every_snapshot_as_it_was(spark, make_config, table_format):
    config = make_config(f"storage.format={table_format}")
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(numbered_rows(spark, DAY_1, 1), database, "scores", DAY_1)
    warehouse.write_snapshot(numbered_rows(spark, DAY_2, 2), database, "scores", DAY_2)
    failing = F.udf(_fail_on_the_last_row, DoubleType())

    # The last of four tasks fails after the others wrote their files: nothing of it may show.
    for snapshot in (DAY_1, dt.date(2025, 3, 31)):
        broken = numbered_rows(spark, snapshot, 9).withColumn("value", failing("customer_id"))
        with pytest.raises(Exception, match="simulated failure half-way"):
            warehouse.write_snapshot(broken, database, "scores", snapshot)

    rows = spark.sql(
        f"SELECT snapshot_date, count(*) AS n, min(value) AS low, max(value) AS high "
        f"FROM {database}.scores GROUP BY 1 ORDER BY 1"
    ).collect()
    assert [tuple(row) for row in rows] == [(DAY_1, 400, 1.0, 1.0), (DAY_2, 400, 2.0, 2.0)]
    if table_format == "delta":
        assert len(spark.sql(f"DESCRIBE HISTORY {database}.scores").collect()) == 2


def test_a_reader_during_snapshot_rewrites_sees_one_whole_version_of_each_snapshot(spark, make_config):
    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(numbered_rows(spark, DAY_1, 0), database, "scores", DAY_1)
    warehouse.write_snapshot(numbered_rows(spark, DAY_2, 0), database, "scores", DAY_2)
    query = (
        f"SELECT snapshot_date, count(*) AS n, min(value) AS low, max(value) AS high "
        f"FROM {database}.scores GROUP BY 1 ORDER BY 1"
    )
    reads: list[list[tuple]] = []
    errors: list[BaseException] = []
    writes_done = threading.Event()

    def read_until_the_writes_are_done() -> None:
        try:
            while not writes_done.is_set():
                reads.append([tuple(row) for row in spark.sql(query).collect()])
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    reader = threading.Thread(target=read_until_the_writes_are_done)
    reader.start()
    for version in range(1, 5):
        warehouse.write_snapshot(numbered_rows(spark, DAY_2, version), database, "scores", DAY_2)
    writes_done.set()
    reader.join()

    assert not errors, errors
    versions_seen = set()
    for read in reads:
        (day_1, day_2) = read
        assert day_1 == (DAY_1, 400, 0.0, 0.0)
        assert day_2[:2] == (DAY_2, 400) and day_2[2] == day_2[3], read  # never a mix of two writes
        versions_seen.add(day_2[2])
    assert len(versions_seen) >= 2, versions_seen  # the reads did interleave with the writes


def test_managed_tables_have_three_level_names_carry_seglibs_property_and_keep_no_folder_of_its_own(
    spark, make_config
):
    config = make_config(*STORAGE_MODES["managed"])
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0, 2.0]), database, "scores", DAY_1)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [5.0]), database, "scores", DAY_1)

    name = f"spark_catalog.{database}.scores"
    assert warehouse.table_name(database, "scores") == f"`spark_catalog`.`{database}`.`scores`"
    assert [row["value"] for row in spark.table(name).collect()] == [5.0]
    entry = warehouse.catalog_entry(database, "scores")
    assert entry is not None and entry.table_type == "MANAGED" and entry.created_by_seglib
    assert [column.name for column in spark.catalog.listColumns(name) if column.isPartition] == [
        "snapshot_date"
    ]
    assert not HadoopFiles(spark).exists(
        warehouse.location(database, "scores")
    )  # no folder under warehouse_dir
    assert warehouse.register_existing_tables(database) == []


def test_a_managed_table_seglib_did_not_create_is_never_written(spark, make_config):
    config = make_config(*STORAGE_MODES["managed"])
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS spark_catalog.{database}")
    spark.sql(
        f"CREATE TABLE spark_catalog.{database}.scores (customer_id long, value double, snapshot_date date) "
        "USING delta"
    )
    spark.sql(f"INSERT INTO spark_catalog.{database}.scores VALUES (7, 7.0, DATE'{DAY_1}')")
    with pytest.raises(UnsafeWriteError, match=r"managed table .* that seglib did not create"):
        warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), database, "scores", DAY_1)
    with pytest.raises(UnsafeWriteError):
        warehouse.write_table(snapshot_rows(spark, DAY_1, [1.0]), database, "scores")
    assert [tuple(row) for row in spark.table(f"spark_catalog.{database}.scores").collect()] == [
        (7, 7.0, DAY_1)
    ]
