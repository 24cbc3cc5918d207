"""Row-level rules: every bad row lands in the quarantine with its reason, and counts reconcile."""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import functions as F

from seglib.features.stage import features
from seglib.inputs.sources import canonical_frame
from seglib.inputs.validation import (
    AFTER_SNAPSHOT,
    BAD_AMOUNT,
    BAD_TIMESTAMP,
    DUPLICATE_CUSTOMER,
    DUPLICATE_TRANSACTION,
    NULL_CUSTOMER,
    SIGNUP_AFTER_SNAPSHOT,
    customer_rules,
    transaction_rules,
    validate_rows,
)
from seglib.platform.warehouse import Warehouse

SNAPSHOT = dt.date(2025, 6, 30)
TS = dt.datetime(2025, 6, 1, 12, 0, 0)
TRANSACTIONS_SCHEMA = "txn string, cust bigint, at timestamp, total double"
TRANSACTION_COLUMNS = {"transaction_id": "txn", "customer_id": "cust", "timestamp": "at", "amount": "total"}


def dirty_transactions(spark):
    return spark.createDataFrame(
        [
            ("t1", 1, TS, 10.0),
            ("t2", None, TS, 10.0),  # null customer
            ("t3", 1, None, 10.0),  # null timestamp
            ("t4", 1, TS, float("nan")),  # NaN amount
            ("t5", 2, TS, float("inf")),  # infinite amount
            ("t6", 2, TS, None),  # null amount
            ("t7", 2, TS, -5.0),  # a return: accepted
            ("t7", 2, TS + dt.timedelta(hours=1), 8.0),  # later duplicate of t7
            ("t8", 2, dt.datetime(2025, 7, 1, 0, 0, 0), 8.0),  # the first second after the snapshot
            ("t9", 2, dt.datetime(2025, 6, 30, 23, 59, 59), 8.0),  # the last second of the snapshot
        ],
        TRANSACTIONS_SCHEMA,
    )


def test_each_bad_row_is_rejected_with_its_reason_and_kept_as_it_was(spark):
    frame = canonical_frame(
        dirty_transactions(spark), "shop.sales", "transactions", TRANSACTION_COLUMNS, None
    )
    result = validate_rows(frame, "shop.sales", transaction_rules(frame.columns, SNAPSHOT), "timestamp")
    assert result.counts == {
        "accepted": 3,
        NULL_CUSTOMER: 1,
        BAD_TIMESTAMP: 1,
        BAD_AMOUNT: 3,
        DUPLICATE_TRANSACTION: 1,
        AFTER_SNAPSHOT: 1,
    }
    # The row after the snapshot is outside the window: counted, neither accepted nor quarantined.
    assert result.outside_window == 1
    assert (
        result.input_rows == 10 == result.accepted.count() + result.rejected.count() + result.outside_window
    )
    accepted = {row["transaction_id"]: row for row in result.accepted.collect()}
    assert sorted(accepted) == ["t1", "t7", "t9"]
    assert accepted["t7"]["amount"] == -5.0  # the first t7 is kept
    assert accepted["t1"]["customer_id"] == "1"  # canonical ids are strings
    rejected = {json.loads(row["row"])["txn"]: row["reason"] for row in result.rejected.collect()}
    assert rejected == {
        "t2": NULL_CUSTOMER,
        "t3": BAD_TIMESTAMP,
        "t4": BAD_AMOUNT,
        "t5": BAD_AMOUNT,
        "t6": BAD_AMOUNT,
        "t7": DUPLICATE_TRANSACTION,
    }
    # the quarantined row is the source row under the user's column names
    original = json.loads(result.rejected.where("reason = 'duplicate transaction_id'").first()["row"])
    assert original == {"txn": "t7", "cust": 2, "at": "2025-06-01T13:00:00.000Z", "total": 8.0}
    assert result.first_ts == TS and result.last_ts == dt.datetime(2025, 7, 1, 0, 0, 0)


def test_duplicate_and_future_customers_are_quarantined(spark):
    customers = spark.createDataFrame(
        [
            (1, dt.date(2025, 1, 1)),
            (1, dt.date(2025, 2, 1)),
            (2, dt.date(2025, 7, 1)),
            (None, dt.date(2025, 1, 1)),
        ],
        "id bigint, joined date",
    )
    frame = canonical_frame(
        customers, "crm.people", "customers", {"customer_id": "id", "signup_date": "joined"}, None
    )
    result = validate_rows(frame, "crm.people", customer_rules(frame.columns, SNAPSHOT))
    assert result.counts == {"accepted": 1, DUPLICATE_CUSTOMER: 1, SIGNUP_AFTER_SNAPSHOT: 1, NULL_CUSTOMER: 1}
    assert result.accepted.first()["signup_date"] == dt.date(2025, 1, 1)  # the earliest signup is kept


def test_features_stage_quarantines_bad_rows_counts_reconcile_and_rerun_replaces_them(spark, make_config):
    config = make_config(
        "features.snapshot_date=2025-06-30",
        "input.transactions.columns={customer_id: cust, timestamp: at, amount: total, transaction_id: txn, "
        "order_id: null, quantity: null, category: null, channel: null, discount: null, is_return: null}",
    )
    warehouse = Warehouse.from_config(spark, config)
    raw = config.input.database
    warehouse.write_table(dirty_transactions(spark), raw, "transactions")
    warehouse.write_table(
        spark.createDataFrame(
            [(1, dt.date(2025, 1, 1), 30, "m", "north"), (2, dt.date(2025, 1, 1), 40, "f", "south"),
             (None, None, 50, "m", "x")],
            "customer_id long, signup_date date, age int, gender string, region string",
        ),
        raw, "customers",
    )  # fmt: skip
    warehouse.write_table(
        spark.createDataFrame(
            [(1, "s1", TS, "view"), (2, "s2", None, "view"), (2, "s3", TS + dt.timedelta(days=40), "view")],
            "customer_id long, session_id string, event_ts timestamp, event_type string",
        ),
        raw,
        "events",
    )
    for _ in range(2):
        result = features(spark, config)
    database = config.storage.database
    quarantine = spark.sql(
        f"SELECT source_table, reason, count(*) AS n FROM {database}.quarantine GROUP BY 1, 2"
    )
    found = {(row["source_table"].split(".")[1], row["reason"], row["n"]) for row in quarantine.collect()}
    assert found == {
        ("transactions", NULL_CUSTOMER, 1),
        ("transactions", BAD_TIMESTAMP, 1),
        ("transactions", BAD_AMOUNT, 3),
        ("transactions", DUPLICATE_TRANSACTION, 1),
        ("customers", NULL_CUSTOMER, 1),
        ("events", BAD_TIMESTAMP, 1),
    }
    for table, counts in result.input_counts.items():
        source = spark.table(table).count()
        quarantined = sum(n for name, _, n in found if name == table.split(".")[1])
        after = counts.get(AFTER_SNAPSHOT, 0)
        assert after == (0 if table.endswith("customers") else 1), (
            table
        )  # later rows: counted, not quarantined
        assert source == sum(counts.values()) == counts["accepted"] + after + quarantined, table
    rows = {row["customer_id"]: row for row in spark.table(f"{database}.customer_features").collect()}
    assert sorted(rows) == ["1", "2"]
    assert rows["1"]["monetary_total"] == 10.0 and rows["2"]["monetary_total"] == 3.0  # -5 + 8
    assert spark.table(f"{database}.quarantine").where(F.col("snapshot_date") == SNAPSHOT).count() == 8


def test_describe_prints_the_feature_catalog_of_the_snapshot(spark, make_config, capsys):
    from seglib.cli import build_parser, execute

    config = make_config(
        "features.snapshot_date=2025-06-30",
        "input.customers=null",
        "input.events=null",
        "input.transactions.columns={customer_id: cust, timestamp: at, amount: total, transaction_id: txn, "
        "order_id: null, quantity: null, category: null, channel: null, discount: null, is_return: null}",
    )
    Warehouse.from_config(spark, config).write_table(
        dirty_transactions(spark), config.input.database, "transactions"
    )
    features(spark, config)
    assert build_parser().parse_args(["features", "--describe"]).describe is True
    execute("features", config, describe=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"feature catalog of {config.storage.database}.customer_features, snapshot 2025-06-30:"
    assert lines[1].split() == [
        "feature", "family", "source", "transform", "mean", "stddev", "min", "max", "null%", "levels",
    ]  # fmt: skip
    monetary = next(line.split() for line in lines if line.split()[0] == "monetary_total")
    # customers 1 (10.0) and 2 (-5 + 8 = 3.0)
    assert monetary[:8] == ["monetary_total", "monetary", "transactions", "log1p", "6.5", "3.5", "3", "10"]
    flag = next(line.split() for line in lines if line.split()[0] == "has_purchases")
    assert flag[:4] == ["has_purchases", "availability", "transactions", "flag"]
