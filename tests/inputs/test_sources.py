"""The input contract: mapped columns, every kind of source, and schema errors that name the fix."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from seglib.contract.config import load_config
from seglib.contract.errors import ConfigError, InputDataError
from seglib.inputs.sources import read_inputs, read_source, source_label
from seglib.inputs.validation import BAD_AMOUNT, BAD_TIMESTAMP
from seglib.platform.warehouse import Warehouse

ONLY_TRANSACTIONS = ["input.customers=null", "input.events=null", "features.snapshot_date=2025-06-30"]
BARE_COLUMNS = (
    "input.transactions.columns={customer_id: card, timestamp: bought, amount: total, transaction_id: null, "
    "order_id: null, quantity: null, category: null, channel: null, discount: null, is_return: null}"
)
CSV_TEXT = """card;bought;total;note
c1;01/06/2025 10:00;12.50;ok
c1;02/06/2025 11:30;7;ok
c2;31/05/2025 09:15;-3.25;a return
c2;2025-06-01;5.00;iso date, not the configured pattern
c3;03/06/2025 12:00;twelve;amount is text
;03/06/2025 12:00;1.00;no card
"""


def csv_config(make_config, folder, *extra):
    return make_config(
        *ONLY_TRANSACTIONS,
        BARE_COLUMNS,
        f"input.transactions.source={{format: csv, path: '{folder}', options: {{delimiter: ';'}}}}",
        "input.transactions.timestamp_format='dd/MM/yyyy HH:mm'",
        *extra,
    )


def test_csv_source_with_own_names_patterned_timestamps_and_text_amounts(spark, make_config, tmp_path):
    folder = tmp_path / "tills"
    folder.mkdir()
    (folder / "export.csv").write_text(CSV_TEXT)
    config = csv_config(make_config, folder)
    inputs = read_inputs(spark, config)
    label = f"csv:{folder}"
    assert inputs.counts == {label: {"accepted": 3, BAD_TIMESTAMP: 1, BAD_AMOUNT: 1, "null customer_id": 1}}
    accepted = {
        (row["customer_id"], row["timestamp"], row["amount"]) for row in inputs.transactions.collect()
    }
    assert accepted == {
        ("c1", dt.datetime(2025, 6, 1, 10, 0), 12.5),
        ("c1", dt.datetime(2025, 6, 2, 11, 30), 7.0),
        ("c2", dt.datetime(2025, 5, 31, 9, 15), -3.25),
    }
    assert inputs.customers is None and inputs.events is None
    rejected = {json.loads(row["row"])["note"]: row["reason"] for row in inputs.rejected.collect()}
    assert rejected == {
        "iso date, not the configured pattern": BAD_TIMESTAMP,
        "amount is text": BAD_AMOUNT,
        "no card": "null customer_id",
    }


@pytest.mark.parametrize("file_format", ["parquet", "delta"])
def test_parquet_and_delta_path_sources(spark, make_config, tmp_path, file_format):
    folder = tmp_path / f"sales_{file_format}"
    spark.createDataFrame([(7, dt.date(2025, 6, 1), 3)], "card int, bought date, total int").write.format(
        file_format
    ).save(str(folder))
    config = make_config(
        *ONLY_TRANSACTIONS,
        BARE_COLUMNS,
        f"input.transactions.source={{format: {file_format}, path: '{folder}'}}",
    )
    row = read_inputs(spark, config).transactions.first()
    assert (row["customer_id"], row["timestamp"], row["amount"]) == ("7", dt.datetime(2025, 6, 1), 3.0)


def test_catalog_table_source_in_another_database(spark, make_config):
    spark.sql("CREATE DATABASE IF NOT EXISTS shop_catalog")
    spark.createDataFrame(
        [("x", dt.datetime(2025, 6, 1, 8, 0), 1.5)], "card string, bought timestamp, total double"
    ).write.mode("overwrite").saveAsTable("shop_catalog.receipts")
    config = make_config(
        *ONLY_TRANSACTIONS, BARE_COLUMNS, "input.transactions.source.name=shop_catalog.receipts"
    )
    assert source_label(config.input.transactions.source, config.input.database) == "shop_catalog.receipts"
    assert read_inputs(spark, config).transactions.count() == 1


def test_a_three_level_table_name_is_read_and_a_fourth_level_is_refused(spark, make_config):
    spark.sql("CREATE DATABASE IF NOT EXISTS spark_catalog.shop_three_level")
    spark.createDataFrame(
        [("x", dt.datetime(2025, 6, 1, 8, 0), 1.5), ("y", dt.datetime(2025, 6, 2, 8, 0), 2.5)],
        "card string, bought timestamp, total double",
    ).write.mode("overwrite").saveAsTable("shop_three_level.receipts")
    config = make_config(
        *ONLY_TRANSACTIONS,
        BARE_COLUMNS,
        "input.transactions.source.name=spark_catalog.shop_three_level.receipts",
    )
    assert source_label(config.input.transactions.source, "raw") == "spark_catalog.shop_three_level.receipts"
    assert sorted(row["amount"] for row in read_inputs(spark, config).transactions.collect()) == [1.5, 2.5]
    with pytest.raises(
        ConfigError, match=r"must be `table`, `database\.table` or `catalog\.database\.table`"
    ):
        make_config(*ONLY_TRANSACTIONS, "input.transactions.source.name=a.b.c.d")
    missing = make_config(*ONLY_TRANSACTIONS, "input.transactions.source.name=other_catalog.shop.receipts")
    with pytest.raises(
        InputDataError, match="not in the Spark catalog, and seglib's own tables are in catalog"
    ):
        read_inputs(spark, missing)


def bare_table(spark, make_config, rows, schema, *extra):
    config = make_config(*ONLY_TRANSACTIONS, BARE_COLUMNS, *extra)
    Warehouse.from_config(spark, config).write_table(
        spark.createDataFrame(rows, schema), config.input.database, "transactions"
    )
    return config


def test_missing_required_column_names_table_column_and_fix(spark, make_config):
    config = bare_table(
        spark, make_config, [("x", dt.datetime(2025, 6, 1), 1.0)], "card string, at timestamp, total double"
    )
    with pytest.raises(InputDataError) as error:
        read_inputs(spark, config)
    message = str(error.value)
    assert (
        f"table {config.input.database}.transactions (transactions) has no column 'bought' for timestamp"
        in message
    )
    assert "['at', 'card', 'total']" in message and "input.transactions.columns" in message


def test_missing_optional_column_suggests_mapping_it_to_null(spark, make_config):
    config = bare_table(
        spark, make_config, [("x", dt.datetime(2025, 6, 1), 1.0)], "card string, bought timestamp, total double",
        "input.transactions.columns.category=product_group",
    )  # fmt: skip
    with pytest.raises(
        InputDataError, match=r"no column 'product_group' for category.*or to null if the table has none"
    ):
        read_inputs(spark, config)


@pytest.mark.parametrize(
    ("schema", "column", "found"),
    [
        ("card string, bought timestamp, total timestamp", "total", "timestamp"),
        ("card string, bought bigint, total double", "bought", "bigint"),
        ("card array<string>, bought timestamp, total double", "card", "array<string>"),
    ],
)
def test_a_type_that_cannot_be_cast_names_the_column_and_the_types_accepted(
    spark, make_config, schema, column, found
):
    values = {
        "string": "x",
        "timestamp": dt.datetime(2025, 6, 1),
        "bigint": 1,
        "double": 1.0,
        "array<string>": ["x"],
    }
    row = tuple(values[field.split(" ", 1)[1]] for field in schema.split(", "))
    config = bare_table(spark, make_config, [row], schema)
    with pytest.raises(
        InputDataError, match=rf"column '{column}' \(\w+\) has type {found}, which cannot be read as"
    ):
        read_inputs(spark, config)


def test_an_empty_table_stops_the_job(spark, make_config):
    config = bare_table(spark, make_config, [], "card string, bought timestamp, total double")
    with pytest.raises(InputDataError, match=r"\.transactions \(transactions\) is empty"):
        read_inputs(spark, config)


def test_a_snapshot_outside_the_data_range_stops_the_job(spark, make_config):
    rows = [("x", dt.datetime(2025, 6, 1), 1.0), ("y", dt.datetime(2025, 6, 20), 2.0)]
    schema = "card string, bought timestamp, total double"
    early = bare_table(spark, make_config, rows, schema, "features.snapshot_date=2025-05-31")
    with pytest.raises(InputDataError, match=r"2025-05-31 is before the first transaction .* \(2025-06-01\)"):
        read_inputs(spark, early)
    late = bare_table(spark, make_config, rows, schema, "features.snapshot_date=2025-12-31")
    with pytest.raises(InputDataError, match=r"194 days after the last transaction .*snapshot_grace_days=90"):
        read_inputs(spark, late)


def test_a_table_source_that_does_not_exist(spark, make_config):
    config = make_config(*ONLY_TRANSACTIONS, "input.transactions.source.name=nowhere")
    with pytest.raises(InputDataError, match=r"table .*\.nowhere is neither in the Spark catalog nor under"):
        read_inputs(spark, config)


def test_a_csv_path_that_does_not_exist(spark, make_config, tmp_path):
    config = csv_config(make_config, tmp_path / "missing")
    with pytest.raises(InputDataError, match=r"cannot read csv:.*missing"):
        read_source(spark, Warehouse.from_config(spark, config), config.input.transactions.source, "raw")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("input.transactions.source={format: csv}", "a csv source needs `path`"),
        ("input.transactions.source={format: table, name: 'a.b.c.d'}", "or `catalog.database.table`"),
        ("input.transactions.source={format: table, name: 'x;drop'}", "is not a valid identifier"),
        ("input.transactions.columns.amount='total amount'", "is not a valid identifier"),
        ("input.customers.columns.birth_date=dob", "either age or birth_date"),
        ("input.events.event_types={view: [v]}", "missing: ['search', 'add_to_cart', 'purchase']"),
        ("input.transactions=null", "input.transactions"),
        ("features.windows_days=[30, 30]", "distinct positive day counts"),
    ],
)
def test_invalid_input_config_is_reported_with_the_fix(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_csv_schema_option_types_the_columns_before_mapping(spark, make_config, tmp_path):
    folder = tmp_path / "typed"
    folder.mkdir()
    (folder / "export.csv").write_text("card;bought;total;note\n7;2025-06-01 10:00:00;2.5;x\n")
    config = make_config(
        *ONLY_TRANSACTIONS,
        BARE_COLUMNS,
        f"input.transactions.source={{format: csv, path: '{folder}', options: {{delimiter: ';'}}, "
        "csv_schema: 'card INT, bought TIMESTAMP, total DOUBLE, note STRING'}",
    )
    source = read_source(spark, Warehouse.from_config(spark, config), config.input.transactions.source, "raw")
    assert source.schema.simpleString() == "struct<card:int,bought:timestamp,total:double,note:string>"
    row = read_inputs(spark, config).transactions.first()
    assert (row["customer_id"], row["timestamp"], row["amount"]) == ("7", dt.datetime(2025, 6, 1, 10), 2.5)
