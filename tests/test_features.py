"""Each feature definition on a handful of literal rows, with exact expected values."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from seglib.errors import InputDataError
from seglib.features import (
    apply_preprocessing,
    build_features,
    category_share_column,
    check_input_columns,
    customer_attributes,
    event_features,
    numeric_feature_names,
    preprocessing_pipeline,
    top_categories,
    transaction_features,
    vector_slot_names,
)

SNAPSHOT = dt.date(2025, 6, 30)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture
def transactions(spark):
    return spark.createDataFrame(
        [
            ("t1", 1, ts("2025-06-20 10:00:00"), 10.0, "books"),
            ("t2", 1, ts("2025-06-30 23:59:59"), 30.0, "toys"),  # last second of the snapshot: included
            ("t3", 1, ts("2025-07-01 00:00:00"), 500.0, "toys"),  # the next day: future, excluded
            ("t4", 2, ts("2025-01-01 08:00:00"), 40.0, "books"),
            ("t5", 2, ts("2025-03-01 08:00:00"), -10.0, "books"),  # a return
            ("t6", 3, ts("2025-08-01 08:00:00"), 99.0, "books"),  # only future purchases
        ],
        "transaction_id string, customer_id long, transaction_ts timestamp, amount double, category string",
    )


@pytest.fixture
def events(spark):
    return spark.createDataFrame(
        [
            (1, "s1", ts("2025-06-01 10:00:00"), "view"),
            (1, "s1", ts("2025-06-01 10:01:00"), "search"),
            (1, "s2", ts("2025-06-28 10:00:00"), "VIEW"),
            (1, "s2", ts("2025-06-28 10:02:00"), "cart"),
            (1, "s3", ts("2025-07-02 10:00:00"), "purchase"),  # future
            (2, "s9", ts("2025-05-31 09:00:00"), "purchase"),
        ],
        "customer_id long, session_id string, event_ts timestamp, event_type string",
    )


@pytest.fixture
def customers(spark):
    return spark.createDataFrame(
        [
            (1, dt.date(2025, 6, 20), 30, "North "),
            (2, dt.date(2024, 6, 30), None, None),
            (3, dt.date(2025, 7, 15), 50, "south"),  # signs up after the snapshot
            (4, dt.date(2025, 1, 1), 41, "south"),  # never buys
        ],
        "customer_id long, signup_date date, age int, region string",
    )


def test_transaction_features_use_only_rows_up_to_the_snapshot(transactions):
    result = transaction_features(transactions, SNAPSHOT, ["books", "toys"])
    expected = [
        Row(
            customer_id=1,
            recency_days=0.0,
            frequency=2.0,
            monetary=40.0,
            avg_order_value=20.0,
            share_books=0.25,
            share_toys=0.75,
        ),
        Row(
            customer_id=2,
            recency_days=121.0,
            frequency=2.0,
            monetary=30.0,
            avg_order_value=15.0,
            share_books=1.0,
            share_toys=0.0,
        ),
    ]
    assertDataFrameEqual(result, expected)


def test_event_features_count_types_case_insensitively_and_ignore_the_future(events):
    result = event_features(events, SNAPSHOT)
    expected = [
        Row(
            customer_id=1,
            sessions=2.0,
            views=2.0,
            searches=1.0,
            carts=1.0,
            purchase_events=0.0,
            days_since_last_visit=2.0,
        ),
        Row(
            customer_id=2,
            sessions=1.0,
            views=0.0,
            searches=0.0,
            carts=0.0,
            purchase_events=1.0,
            days_since_last_visit=30.0,
        ),
    ]
    assertDataFrameEqual(result, expected)


def test_customer_attributes_skip_later_signups_and_normalise_region(customers):
    result = customer_attributes(customers, SNAPSHOT)
    expected = [
        Row(customer_id=1, age=30.0, tenure_days=10.0, region="north"),
        Row(customer_id=2, age=None, tenure_days=365.0, region="unknown"),
        Row(customer_id=4, age=41.0, tenure_days=180.0, region="south"),
    ]
    assertDataFrameEqual(result, expected)


def test_build_features_defines_every_feature_for_customers_without_purchases_or_visits(
    customers, transactions, events
):
    result = build_features(customers, transactions, events, SNAPSHOT, ["books"], recency_cap_days=365.0)
    rows = {row["customer_id"]: row for row in result.collect()}
    assert sorted(rows) == [1, 2, 4]  # customer 3 has neither signed up nor bought by the snapshot
    never_bought = rows[4]
    assert never_bought["frequency"] == 0.0
    assert never_bought["monetary"] == 0.0
    assert never_bought["share_books"] == 0.0
    assert never_bought["recency_days"] == 365.0
    assert never_bought["days_since_last_visit"] == 365.0
    assert never_bought["sessions"] == 0.0
    assert rows[1]["snapshot_date"] == SNAPSHOT
    assert rows[2]["recency_days"] == 121.0


def test_top_categories_ranks_by_count_up_to_the_snapshot(transactions):
    # books: 3 rows up to the snapshot; toys: 1 (its second row is in the future)
    assert top_categories(transactions, SNAPSHOT, 5) == ["books", "toys"]
    assert top_categories(transactions, SNAPSHOT, 1) == ["books"]


def test_category_share_column_names_are_safe_identifiers():
    assert category_share_column("books") == "share_books"
    garden = category_share_column("Home & Garden")
    assert garden.startswith("share_home_garden_") and len(garden) == len("share_home_garden_") + 6
    assert garden != category_share_column("home_garden") != category_share_column("Home_Garden")
    assert category_share_column("électronique").startswith("share_lectronique_")
    assert category_share_column("").startswith("share_")


def test_preprocessing_standardises_numeric_features_and_keeps_region_one_hot_binary(spark):
    raw = spark.createDataFrame(
        [(1, 1.0, "a"), (2, 3.0, "b"), (3, None, "b")],
        "customer_id long, recency_days double, region string",
    )
    model = preprocessing_pipeline(["recency_days"]).fit(raw)
    rows = {row["customer_id"]: row["features"] for row in apply_preprocessing(model, raw).collect()}
    # recency imputed by its median (1.0 for [1, 3] with Spark's approximate median), then standardised
    values = [rows[1][0], rows[2][0], rows[3][0]]
    assert sum(values) == pytest.approx(0.0, abs=1e-6)
    assert rows[1][0] == pytest.approx(rows[3][0])
    assert rows[2][0] > rows[1][0]
    # region slots: a, b and one for unseen regions; exactly one 1.0 each, unscaled
    assert [list(rows[1][1:]), list(rows[2][1:]), list(rows[3][1:])] == [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
    ]
    assert vector_slot_names(model, ["recency_days"]) == [
        "recency_days",
        "region=a",
        "region=b",
        "region=__unseen__",
    ]
    unseen = spark.createDataFrame([(9, 2.0, "zzz")], "customer_id long, recency_days double, region string")
    assert list(apply_preprocessing(model, unseen).first()["features"][1:]) == [0.0, 0.0, 1.0]


def test_numeric_feature_names_add_one_share_per_category():
    names = numeric_feature_names(["books", "toys"])
    assert names[-2:] == ["share_books", "share_toys"]
    assert "recency_days" in names and "monetary" in names


def test_missing_required_column_names_the_table_and_the_column(spark):
    df = spark.createDataFrame([(1, 2.0)], "customer_id long, amount double")
    with pytest.raises(
        InputDataError, match=r"table shop\.orders \(transactions\) has no column 'transaction_id'"
    ):
        check_input_columns(df, "transactions", "shop.orders")


def test_mistyped_column_names_the_type_found_and_expected(spark):
    df = spark.createDataFrame(
        [(1, "t1", "2025-01-01", "12.5", "books")],
        "customer_id long, transaction_id string, transaction_ts string, amount string, category string",
    )
    with pytest.raises(
        InputDataError, match=r"column 'transaction_ts' has type string, expected one of: date"
    ):
        check_input_columns(df, "transactions", "shop.orders")


def test_features_stage_stops_on_a_raw_table_without_a_required_column(spark, make_config, customers, events):
    from seglib.features import features
    from seglib.warehouse import Warehouse

    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    raw = config.input.database
    no_amount = spark.createDataFrame(
        [("t1", 1, ts("2025-06-20 10:00:00"), "books")],
        "transaction_id string, customer_id long, transaction_ts timestamp, category string",
    )
    warehouse.write_table(customers, raw, "customers")
    warehouse.write_table(events, raw, "events")
    warehouse.write_table(no_amount, raw, "transactions")
    with pytest.raises(
        InputDataError, match=rf"table {raw}\.transactions \(transactions\) has no column 'amount'"
    ):
        features(spark, config)
    assert not warehouse.exists(config.storage.database, "customer_features")
