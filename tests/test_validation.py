from __future__ import annotations

import datetime as dt
import json

from seglib.features import features
from seglib.validation import transaction_rules, validate_rows
from seglib.warehouse import Warehouse

TS = dt.datetime(2025, 6, 1, 12, 0, 0)
TRANSACTIONS_SCHEMA = (
    "transaction_id string, customer_id long, transaction_ts timestamp, amount double, category string"
)


def dirty_transactions(spark):
    return spark.createDataFrame(
        [
            ("t1", 1, TS, 10.0, "books"),
            ("t2", None, TS, 10.0, "books"),  # null customer
            ("t3", 1, None, 10.0, "books"),  # null timestamp
            ("t4", 1, TS, float("nan"), "books"),  # NaN amount
            ("t5", 2, TS, float("inf"), "toys"),  # infinite amount
            ("t6", 2, TS, None, "toys"),  # null amount
            ("t7", 2, TS, -5.0, "toys"),  # a return: accepted
            ("t7", 2, TS + dt.timedelta(hours=1), 8.0, "toys"),  # later duplicate of t7
        ],
        TRANSACTIONS_SCHEMA,
    )


def test_each_bad_row_is_rejected_with_its_reason_and_nothing_is_lost(spark):
    result = validate_rows(dirty_transactions(spark), "shop.transactions", transaction_rules())
    assert result.counts == {
        "accepted": 2,
        "null customer_id": 1,
        "null or unparseable transaction_ts": 1,
        "null or non-finite amount": 3,
        "duplicate transaction_id": 1,
    }
    assert result.input_rows == 8 == result.accepted.count() + result.rejected.count()
    assert sorted(row["transaction_id"] for row in result.accepted.collect()) == ["t1", "t7"]
    assert result.accepted.where("transaction_id = 't7'").first()["amount"] == -5.0  # the first t7 is kept
    rejected = {json.loads(row["row"])["transaction_id"]: row["reason"] for row in result.rejected.collect()}
    assert rejected == {
        "t2": "null customer_id",
        "t3": "null or unparseable transaction_ts",
        "t4": "null or non-finite amount",
        "t5": "null or non-finite amount",
        "t6": "null or non-finite amount",
        "t7": "duplicate transaction_id",
    }
    assert {row["source_table"] for row in result.rejected.collect()} == {"shop.transactions"}


def test_features_stage_quarantines_bad_rows_and_rerun_replaces_them(spark, make_config):
    config = make_config("features.snapshot_date=2025-06-30")
    warehouse = Warehouse.from_config(spark, config)
    raw = config.input.database
    warehouse.write_table(dirty_transactions(spark), raw, "transactions")
    warehouse.write_table(
        spark.createDataFrame(
            [
                (1, dt.date(2025, 1, 1), 30, "north"),
                (2, dt.date(2025, 1, 1), 40, "south"),
                (None, None, 50, "x"),
            ],
            "customer_id long, signup_date date, age int, region string",
        ),
        raw,
        "customers",
    )
    warehouse.write_table(
        spark.createDataFrame(
            [(1, "s1", TS, "view"), (2, "s2", None, "view")],
            "customer_id long, session_id string, event_ts timestamp, event_type string",
        ),
        raw,
        "events",
    )
    for _ in range(2):
        features(spark, config)
    database = config.storage.database
    quarantine = spark.sql(
        f"SELECT source_table, reason, count(*) AS n FROM {database}.quarantine GROUP BY 1, 2"
    )
    assert {(row["source_table"].split(".")[1], row["reason"], row["n"]) for row in quarantine.collect()} == {
        ("transactions", "null customer_id", 1),
        ("transactions", "null or unparseable transaction_ts", 1),
        ("transactions", "null or non-finite amount", 3),
        ("transactions", "duplicate transaction_id", 1),
        ("customers", "null customer_id", 1),
        ("events", "null or unparseable event_ts", 1),
    }
    rows = {row["customer_id"]: row for row in spark.table(f"{database}.customer_features").collect()}
    assert sorted(rows) == [1, 2]
    assert rows[1]["monetary"] == 10.0 and rows[2]["monetary"] == -5.0
