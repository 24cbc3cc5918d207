"""Each feature definition on a handful of literal canonical rows, with exact expected values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest
from pyspark.sql import DataFrame
from pyspark.testing import assertDataFrameEqual

from seglib.features.customers import customer_attributes
from seglib.features.events import event_features
from seglib.features.spec import category_share_column
from seglib.features.stage import (
    FeatureSettings,
    apply_preprocessing,
    build_features,
    preprocessing_pipeline,
    top_values_of,
    vector_slot_names,
)
from seglib.features.transactions import transaction_feature_specs, transaction_features

SNAPSHOT = dt.date(2025, 6, 30)  # a Monday
EVENT_TYPES = {"view": ["view"], "search": ["search"], "add_to_cart": ["cart"], "purchase": ["purchase"]}
SETTINGS = FeatureSettings(
    snapshot=SNAPSHOT,
    windows_days=(30, 90),
    trend_window_days=30,
    recency_cap_days=365.0,
    categories=("books", "toys"),
    channels=("web", "app", "store"),
    event_types=EVENT_TYPES,
    min_rate_support=2,
)
TRANSACTIONS_SCHEMA = (
    "customer_id string, timestamp timestamp, amount double, transaction_id string, order_id string, "
    "quantity double, category string, channel string, discount double, is_return boolean"
)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture
def transactions(spark) -> DataFrame:
    return spark.createDataFrame(
        [
            ("a", ts("2025-06-01 10:00:00"), 100.0, "t1", "o1", 2.0, "books", "web", 10.0, False),  # Sunday
            ("a", ts("2025-06-01 10:00:00"), 50.0, "t2", "o1", 1.0, "toys", "web", 0.0, False),  # same basket
            ("a", ts("2025-06-21 20:00:00"), 30.0, "t3", "o2", 1.0, "books", "app", 0.0, False),  # Saturday
            ("a", ts("2025-06-25 09:00:00"), 20.0, "t4", "o1", 1.0, "books", "web", 0.0, True),  # a return
            ("a", ts("2025-07-01 00:00:00"), 999.0, "t5", "o3", 9.0, "toys", "web", 0.0, False),  # future
            ("b", ts("2025-01-15 03:00:00"), 40.0, "t6", "o4", 1.0, "toys", "store", 5.0, False),  # Wednesday
            ("b", ts("2025-03-01 15:00:00"), 60.0, "t7", "o5", 3.0, "toys", "web", 0.0, False),  # Saturday
            (
                "c",
                ts("2025-08-01 08:00:00"),
                99.0,
                "t8",
                "o6",
                1.0,
                "books",
                "web",
                0.0,
                False,
            ),  # only future
        ],
        TRANSACTIONS_SCHEMA,
    )


def by_customer(df: DataFrame) -> dict[str, dict]:
    return {row["customer_id"]: row.asDict() for row in df.collect()}


def test_transaction_features_have_exact_values_from_rows_up_to_the_snapshot(transactions):
    rows = by_customer(transaction_features(transactions, SETTINGS))
    assert sorted(rows) == ["a", "b"]  # c bought only after the snapshot
    books, toys = 130.0 / 180.0, 50.0 / 180.0
    assert rows["a"] == pytest.approx(
        {
            "customer_id": "a",
            "recency_days": 9.0,
            "frequency": 2.0,  # orders o1 and o2; the return is not a purchase
            "monetary_total": 160.0,  # 100 + 50 + 30 - 20
            "monetary_mean": 90.0,  # 180 bought over 2 orders
            "monetary_max": 100.0,
            "purchase_tenure_days": 29.0,
            "interpurchase_mean_days": 20 + 10 / 24,  # the two lines of o1 are one moment
            "interpurchase_std_days": 0.0,
            "frequency_30d": 2.0,
            "monetary_30d": 160.0,
            "frequency_90d": 2.0,
            "monetary_90d": 160.0,
            "spend_trend": 1.0,  # 180 in the last 30 days, nothing in the 30 before
            "return_rate": 0.25,
            "weekend_share": 1.0,
            "daypart_night_share": 0.0,
            "daypart_morning_share": 2 / 3,
            "daypart_afternoon_share": 0.0,
            "daypart_evening_share": 1 / 3,
            "basket_size": 2.0,  # 4 units over 2 orders
            "distinct_categories": 2.0,
            "category_entropy": -(books * math.log(books) + toys * math.log(toys)),
            "share_books": books,
            "share_toys": toys,
            "channel_share_web": 2 / 3,
            "channel_share_app": 1 / 3,
            "channel_share_store": 0.0,
            "discount_share": 1 / 3,
        }
    )
    assert rows["b"] == pytest.approx(
        {
            "customer_id": "b",
            "recency_days": 121.0,
            "frequency": 2.0,
            "monetary_total": 100.0,
            "monetary_mean": 50.0,
            "monetary_max": 60.0,
            "purchase_tenure_days": 166.0,
            "interpurchase_mean_days": 45.5,
            "interpurchase_std_days": 0.0,
            "frequency_30d": 0.0,
            "monetary_30d": 0.0,
            "frequency_90d": 0.0,
            "monetary_90d": 0.0,
            "spend_trend": 0.0,
            "return_rate": 0.0,
            "weekend_share": 0.5,
            "daypart_night_share": 0.5,
            "daypart_morning_share": 0.0,
            "daypart_afternoon_share": 0.5,
            "daypart_evening_share": 0.0,
            "basket_size": 2.0,
            "distinct_categories": 1.0,
            "category_entropy": 0.0,
            "share_books": 0.0,
            "share_toys": 1.0,
            "channel_share_web": 0.5,
            "channel_share_app": 0.0,
            "channel_share_store": 0.5,
            "discount_share": 0.5,
        }
    )


def test_interpurchase_spread_and_spend_trend_against_the_previous_window(spark):
    rows = spark.createDataFrame(
        [
            ("a", ts("2025-04-01 00:00:00"), 10.0),
            ("a", ts("2025-04-03 00:00:00"), 10.0),  # gap 2 days
            ("a", ts("2025-06-09 00:00:00"), 30.0),  # gap 67 days
            ("a", ts("2025-06-20 00:00:00"), 10.0),  # gap 11 days
        ],
        "customer_id string, timestamp timestamp, amount double",
    )
    result = transaction_features(rows, SETTINGS).first().asDict()
    gaps = [2.0, 67.0, 11.0]
    mean = sum(gaps) / 3
    assert result["interpurchase_mean_days"] == pytest.approx(mean)
    assert result["interpurchase_std_days"] == pytest.approx(
        math.sqrt(sum((g - mean) ** 2 for g in gaps) / 3)
    )
    # last 30 days (from 2025-06-01): 40; the 30 before: nothing; April is outside both
    assert result["spend_trend"] == pytest.approx(1.0)
    assert result["frequency_90d"] == 3.0  # 2025-04-01 is 90 days back: outside the last 90 days
    assert result["frequency_30d"] == 2.0


def test_a_bare_purchase_log_gives_rfm_timing_and_baskets_only(spark):
    bare = spark.createDataFrame(
        [
            ("a", ts("2025-06-01 10:00:00"), 10.0),
            ("a", ts("2025-06-01 10:00:00"), 5.0),  # same till receipt: one basket
            ("a", ts("2025-06-10 10:00:00"), -5.0),  # negative: a return
        ],
        "customer_id string, timestamp timestamp, amount double",
    )
    specs = [spec.name for spec in transaction_feature_specs(bare.columns, SETTINGS)]
    assert not any(
        name.startswith(("share_", "channel_share_", "discount", "distinct_cat")) for name in specs
    )
    result = transaction_features(bare, SETTINGS).first().asDict()
    assert list(result) == ["customer_id", *specs]
    assert result["frequency"] == 1.0
    assert result["basket_size"] == 2.0  # two lines in the one basket
    assert result["monetary_total"] == 10.0
    assert result["return_rate"] == pytest.approx(1 / 3)


def test_a_date_only_log_has_no_day_part_features_and_keeps_its_weekdays(spark):
    from seglib.inputs.validation import transaction_rules, validate_rows

    dates = spark.createDataFrame(
        [("a", ts("2025-06-07 00:00:00"), 10.0), ("a", ts("2025-06-10 00:00:00"), 4.0)],
        "customer_id string, timestamp timestamp, amount double",
    )
    timed = dates.union(spark.createDataFrame([("b", ts("2025-06-11 18:30:00"), 2.0)], dates.schema))
    rules = transaction_rules(dates.columns, SNAPSHOT)
    assert validate_rows(dates, "shop.days", rules, "timestamp").has_time_of_day is False
    assert validate_rows(timed, "shop.lines", rules, "timestamp").has_time_of_day is True

    date_only = dataclasses.replace(SETTINGS, time_of_day=False)
    specs = [spec.name for spec in transaction_feature_specs(dates.columns, date_only)]
    assert not any(name.startswith("daypart_") for name in specs)
    assert {spec.name for spec in transaction_feature_specs(dates.columns, SETTINGS)} - set(specs) == {
        "daypart_night_share", "daypart_morning_share", "daypart_afternoon_share", "daypart_evening_share"
    }  # fmt: skip
    result = transaction_features(dates, date_only).first().asDict()
    assert list(result) == ["customer_id", *specs]
    assert result["weekend_share"] == 0.5  # 2025-06-07 is a Saturday


EVENTS_SCHEMA = "customer_id string, timestamp timestamp, session_id string, event_type string"


def test_event_features_count_kinds_sessions_and_conversion(spark):
    events = spark.createDataFrame(
        [
            ("a", ts("2025-06-01 10:00:00"), "s1", "view"),
            ("a", ts("2025-06-01 10:01:00"), "s1", "search"),
            ("a", ts("2025-06-01 10:02:00"), "s1", "cart"),  # abandoned cart
            ("a", ts("2025-06-28 10:00:00"), "s2", "VIEW"),
            ("a", ts("2025-06-28 10:05:00"), "s2", "cart"),
            ("a", ts("2025-06-28 10:06:00"), "s2", "purchase"),
            ("a", ts("2025-07-02 10:00:00"), "s3", "purchase"),  # future
            ("b", ts("2025-05-31 09:00:00"), "s9", "purchase"),
        ],
        EVENTS_SCHEMA,
    )
    rows = by_customer(event_features(events, SETTINGS))
    assert rows["a"] == pytest.approx(
        {
            "customer_id": "a",
            "sessions": 2.0,
            "events_per_session": 3.0,
            "days_since_last_visit": 2.0,
            "sessions_30d": 2.0,
            "sessions_90d": 2.0,
            "views": 2.0,
            "searches": 1.0,
            "add_to_carts": 2.0,
            "purchase_events": 1.0,
            "add_to_cart_rate": 1.0,
            "view_to_purchase": 0.5,
            "cart_abandonment": 0.5,
        }
    )
    assert rows["b"] == pytest.approx(
        {
            "customer_id": "b",
            "sessions": 1.0,
            "events_per_session": 1.0,
            "days_since_last_visit": 30.0,
            "sessions_30d": 0.0,  # 30 days ago is outside the last 30 days
            "sessions_90d": 1.0,
            "views": 0.0,
            "searches": 0.0,
            "add_to_carts": 0.0,
            "purchase_events": 1.0,
            # One visit, no views, no carts: below SETTINGS.min_rate_support, the rates stay empty.
            "add_to_cart_rate": None,
            "view_to_purchase": None,
            "cart_abandonment": None,
        }
    )


def test_sessions_are_cut_at_the_gap_when_there_is_no_session_id(spark):
    events = spark.createDataFrame(
        [
            ("a", ts("2025-06-01 10:00:00"), "screen_view", "home"),
            ("a", ts("2025-06-01 10:20:00"), "screen_view", "shop"),  # 20 min: same session
            ("a", ts("2025-06-01 11:00:00"), "screen_view", "shop"),  # 40 min: a new session
            ("a", ts("2025-06-01 11:10:00"), "iap_purchase", "shop"),
        ],
        "customer_id string, timestamp timestamp, event_type string, category string",
    )
    settings = FeatureSettings(
        snapshot=SNAPSHOT,
        windows_days=(30,),
        event_types={"view": ["screen_view"], "search": ["search"], "add_to_cart": ["basket"], "purchase": ["iap_purchase"]},
    )  # fmt: skip
    row = event_features(events, settings).first().asDict()
    assert row["sessions"] == 2.0
    assert row["events_per_session"] == 2.0
    assert row["views"] == 3.0 and row["purchase_events"] == 1.0
    assert row["view_to_purchase"] == pytest.approx(1 / 3)
    assert row["distinct_browse_categories"] == 2.0


def test_customer_attributes_normalise_labels_and_derive_age_and_tenure(spark):
    customers = spark.createDataFrame(
        [
            ("a", dt.date(2025, 6, 20), 30.0, "F ", "North ", "Gold", 1000.0),
            ("b", dt.date(2024, 6, 30), None, None, None, None, None),
            ("d", dt.date(2025, 1, 1), 41.0, "m", "south", "basic", 500.0),
        ],
        "customer_id string, signup_date date, age double, gender string, region string, attr_plan string, "
        "attr_limit double",
    )
    result = customer_attributes(customers, SNAPSHOT)
    assert result.columns == [
        "customer_id", "age", "signup_tenure_days", "attr_limit", "gender", "region", "attr_plan",
    ]  # fmt: skip
    expected = [
        ("a", 30.0, 10.0, 1000.0, "f", "north", "gold"),
        ("b", None, 365.0, None, "unknown", "unknown", "unknown"),
        ("d", 41.0, 180.0, 500.0, "m", "south", "basic"),
    ]
    assertDataFrameEqual(result, expected)


def test_age_comes_from_the_birth_date_in_whole_years(spark):
    customers = spark.createDataFrame(
        [("a", dt.date(1990, 7, 1)), ("b", dt.date(1990, 6, 30)), ("c", dt.date(2030, 1, 1))],
        "customer_id string, birth_date date",
    )
    ages = {row["customer_id"]: row["age"] for row in customer_attributes(customers, SNAPSHOT).collect()}
    assert ages == {"a": 34.0, "b": 35.0, "c": None}  # a birth date after the snapshot is no age


def test_build_features_defines_every_feature_with_availability_flags(spark, transactions):
    customers = spark.createDataFrame(
        [("a", dt.date(2025, 1, 1), 30.0, "north"), ("d", dt.date(2025, 1, 1), 41.0, "south")],
        "customer_id string, signup_date date, age double, region string",
    )
    events = spark.createDataFrame(
        [("a", ts("2025-06-01 10:00:00"), "s1", "view"), ("f", ts("2025-06-02 10:00:00"), "s2", "view")],
        EVENTS_SCHEMA,
    )
    raw, feature_set = build_features(transactions, customers, events, SETTINGS)
    rows = by_customer(raw)
    assert sorted(rows) == ["a", "b", "d", "f"]
    assert [spec.name for spec in feature_set.flags] == ["has_purchases", "has_events", "has_demographics"]
    assert [spec.name for spec in feature_set.categorical] == ["region"]
    flags = {
        key: (row["has_purchases"], row["has_events"], row["has_demographics"]) for key, row in rows.items()
    }
    assert flags == {"a": (1, 1, 1), "b": (1, 0, 0), "d": (0, 0, 1), "f": (0, 1, 0)}
    never_bought = rows["d"]
    assert never_bought["frequency"] == 0.0 and never_bought["monetary_total"] == 0.0
    assert never_bought["recency_days"] == 365.0 and never_bought["days_since_last_visit"] == 365.0
    assert never_bought["share_books"] == 0.0 and never_bought["sessions"] == 0.0
    assert never_bought["interpurchase_mean_days"] is None  # left to the pipeline's median
    no_demographics = rows["f"]
    assert no_demographics["age"] is None and no_demographics["region"] == "unknown"
    assert all(row["snapshot_date"] == SNAPSHOT for row in rows.values())
    numeric_and_flags = [spec.name for spec in [*feature_set.numeric, *feature_set.flags]]
    assert raw.columns == ["customer_id", "snapshot_date", *numeric_and_flags, "region"]


def test_top_values_rank_by_count_up_to_the_snapshot(transactions):
    # books: 3 rows up to the snapshot (the future one is ignored); toys: 3 as well, then by name
    assert top_values_of(transactions, ["category"], SNAPSHOT, 5) == {"category": ["books", "toys"]}
    assert top_values_of(transactions, ["category", "channel"], SNAPSHOT, 1) == {
        "category": ["books"],
        "channel": ["web"],
    }
    assert top_values_of(transactions.drop("channel"), ["channel"], SNAPSHOT, 3) == {"channel": []}


def test_category_share_column_names_are_safe_identifiers():
    assert category_share_column("books") == "share_books"
    garden = category_share_column("Home & Garden")
    assert garden.startswith("share_home_garden_") and len(garden) == len("share_home_garden_") + 6
    assert garden != category_share_column("home_garden") != category_share_column("Home_Garden")
    assert category_share_column("électronique").startswith("share_lectronique_")
    assert category_share_column("").startswith("share_")


def test_preprocessing_logs_imputes_scales_and_keeps_flags_and_one_hots_binary(spark):
    from seglib.features.spec import FeatureSpec
    from seglib.features.stage import FeatureSet

    raw = spark.createDataFrame(
        [("a", 0.0, 1.0, 1.0, "x"), ("b", math.e - 1, 3.0, 0.0, "y"), ("c", -(math.e - 1), None, 1.0, "y")],
        "customer_id string, monetary_total double, recency_days double, has_events double, region string",
    )
    feature_set = FeatureSet(
        numeric=[
            FeatureSpec("monetary_total", "monetary", "transactions", "log1p", "zero", ""),
            FeatureSpec("recency_days", "recency", "transactions", "scale", "cap", ""),
        ],
        flags=[FeatureSpec("has_events", "availability", "events", "flag", "zero", "")],
        categorical=[FeatureSpec("region", "demographics", "customers", "one-hot", "none", "")],
    )
    model = preprocessing_pipeline(feature_set).fit(raw)
    rows = {row["customer_id"]: list(row["features"]) for row in apply_preprocessing(model, raw).collect()}
    # signed log1p: 0, 1, -1 -> already mean 0; population std sqrt(2/3) -> sample std 1 after scaling
    logged = [rows[key][0] for key in ("a", "b", "c")]
    assert logged[0] == pytest.approx(0.0, abs=1e-6) and logged[1] == pytest.approx(-logged[2], rel=1e-5)
    assert logged[1] == pytest.approx(1.0, rel=1e-5)
    # recency: c imputed with the median (1.0 for [1, 3]), then standardised
    assert rows["c"][1] == pytest.approx(rows["a"][1], rel=1e-6) and rows["b"][1] > rows["a"][1]
    # the flag and the region slots (x, y, unseen) stay 0/1
    assert [rows[key][2:] for key in ("a", "b", "c")] == [
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [1.0, 0.0, 1.0, 0.0],
    ]
    assert vector_slot_names(model, feature_set) == [
        "monetary_total", "recency_days", "has_events", "region=x", "region=y", "region=__unseen__",
    ]  # fmt: skip
    unseen = spark.createDataFrame([("z", 0.0, 2.0, 0.0, "zzz")], raw.schema)
    assert list(apply_preprocessing(model, unseen).first()["features"][3:]) == [0.0, 0.0, 1.0]


def test_family_weighting_gives_each_feature_family_the_variance_of_one_feature(spark):
    from seglib.features.spec import FeatureSpec
    from seglib.features.stage import FeatureSet

    rows = [(f"c{i}", float(i), float(i * i % 7), float((3 * i) % 5), float(i % 2)) for i in range(12)]
    raw = spark.createDataFrame(
        rows,
        "customer_id string, recency_days double, monetary_30d double, monetary_90d double, has_events double",
    )
    feature_set = FeatureSet(
        numeric=[
            FeatureSpec("recency_days", "recency", "transactions", "scale", "cap", ""),
            FeatureSpec("monetary_30d", "monetary", "transactions", "scale", "zero", ""),
            FeatureSpec("monetary_90d", "monetary", "transactions", "scale", "zero", ""),
        ],
        flags=[FeatureSpec("has_events", "availability", "events", "flag", "zero", "")],
        categorical=[],
    )
    vectors = {}
    for weighting in ("none", "family"):
        model = preprocessing_pipeline(feature_set, weighting=weighting).fit(raw)
        vectors[weighting] = [list(row["features"]) for row in apply_preprocessing(model, raw).collect()]

    def variance(weighting: str, slot: int) -> float:
        values = [vector[slot] for vector in vectors[weighting]]
        mean = sum(values) / len(values)
        return sum((value - mean) ** 2 for value in values) / (len(values) - 1)

    assert [variance("none", slot) for slot in range(3)] == pytest.approx([1.0, 1.0, 1.0], rel=1e-5)
    # recency alone keeps unit variance; the two spend windows share one unit between them
    assert variance("family", 0) == pytest.approx(1.0, rel=1e-5)
    assert variance("family", 1) + variance("family", 2) == pytest.approx(1.0, rel=1e-5)
    assert variance("family", 1) == pytest.approx(0.5, rel=1e-5)
    assert [vector[3] for vector in vectors["family"]] == [row[4] for row in rows]  # the flag stays 0/1


def test_no_future_leakage_rows_after_the_snapshot_change_nothing(spark):
    """Features of a snapshot computed from the full history equal those from the history cut at the
    snapshot: adding any rows after it (new customers, purchases, returns, visits, signups) changes nothing."""
    from pyspark.sql import functions as F

    from seglib.contract.domain import DOMAINS
    from seglib.synthetic.generator import generate_customers, generate_events, generate_transactions

    end, snapshot = dt.date(2025, 12, 31), dt.date(2025, 8, 31)
    people = generate_customers(spark, 400, seed=9, end_date=end, partitions=2)
    kinds = {"view": "view", "search": "search", "add_to_cart": "cart", "purchase": "purchase"}
    # Cached: both feature builds and the checks read them (generating is most of the work).
    transactions = (
        generate_transactions(people, 9, end, DOMAINS["ecommerce"])
        .withColumn("customer_id", F.col("customer_id").cast("string"))
        .cache()
    )
    events = (
        generate_events(people, 9, end, DOMAINS["ecommerce"], kinds)
        .withColumn("customer_id", F.col("customer_id").cast("string"))
        .cache()
    )
    customers = people.select(
        F.col("customer_id").cast("string").alias("customer_id"),
        "signup_date",
        F.col("age").cast("double").alias("age"),
        "region",
    ).cache()
    cutoff = F.lit(dt.datetime(2025, 9, 1))
    assert transactions.where(F.col("timestamp") >= cutoff).count() > 0  # the future is not empty
    assert customers.where(F.col("signup_date") > F.lit(snapshot)).count() > 0
    settings = FeatureSettings(
        snapshot=snapshot, categories=("electronics", "fashion"), channels=("web",), event_types=EVENT_TYPES
    )
    full, _ = build_features(transactions, customers, events, settings)
    cut, _ = build_features(
        transactions.where(F.col("timestamp") < cutoff),
        customers.where(F.col("signup_date") <= F.lit(snapshot)),
        events.where(F.col("timestamp") < cutoff),
        settings,
    )
    assert full.count() == cut.count() > 300
    assertDataFrameEqual(full, cut, rtol=1e-9)
    for frame in (transactions, events, customers):
        frame.unpersist()
