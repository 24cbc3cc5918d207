from __future__ import annotations

import datetime as dt

import pytest

from seglib.errors import InputDataError
from seglib.warehouse import Warehouse

DAY_1 = dt.date(2025, 1, 31)
DAY_2 = dt.date(2025, 2, 28)


def snapshot_rows(spark, snapshot, values):
    return spark.createDataFrame(
        [(index, value, snapshot) for index, value in enumerate(values)],
        "customer_id long, value double, snapshot_date date",
    )


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_rewriting_a_snapshot_replaces_its_rows_and_keeps_the_others(spark, make_config, table_format):
    config = make_config(f"storage.format={table_format}")
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


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_whole_tables_are_replaced_and_readable_through_the_catalog(spark, make_config, table_format):
    config = make_config(f"storage.format={table_format}")
    warehouse = Warehouse.from_config(spark, config)
    database = config.input.database
    people = spark.createDataFrame([(1, "a"), (2, "b")], "customer_id long, name string")
    warehouse.write_table(people, database, "people")
    warehouse.write_table(people.where("customer_id = 2"), database, "people")
    assert [row["name"] for row in spark.table(f"{database}.people").collect()] == ["b"]
    assert warehouse.read(database, "people").count() == 1
