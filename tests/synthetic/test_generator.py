from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from seglib.contract.domain import DOMAINS, PERSONAS, contrasted_personas
from seglib.inputs.sources import read_inputs
from seglib.inputs.validation import (
    AFTER_SNAPSHOT,
    BAD_AMOUNT,
    BAD_TIMESTAMP,
    DUPLICATE_CUSTOMER,
    DUPLICATE_TRANSACTION,
    NULL_CUSTOMER,
    outside_window_rows,
    quarantined_rows,
)
from seglib.synthetic.generator import (
    generate,
    generate_customers,
    generate_events,
    generate_transactions,
    uniform,
)

END = dt.date(2025, 12, 31)
SHOP = DOMAINS["ecommerce"]
KINDS = {"view": "view", "search": "search", "add_to_cart": "cart", "purchase": "purchase"}


def test_hashed_draws_are_uniform_and_do_not_depend_on_partitioning(spark):
    draws = spark.range(0, 20000, numPartitions=1).select(uniform(3, "x", F.col("id")).alias("u"))
    stats = draws.agg(F.min("u"), F.max("u"), F.avg("u")).first()
    assert 0.0 <= stats[0] < 0.001 and 0.999 < stats[1] < 1.0
    assert abs(stats[2] - 0.5) < 0.01
    other_split = spark.range(0, 20000, numPartitions=7).select(uniform(3, "x", F.col("id")).alias("u"))
    assertDataFrameEqual(draws, other_split)


def test_same_seed_gives_the_same_data_at_any_partitioning(spark):
    one = generate_customers(spark, 300, seed=5, end_date=END, partitions=1)
    four = generate_customers(spark, 300, seed=5, end_date=END, partitions=4)
    assertDataFrameEqual(generate_transactions(one, 5, END, SHOP), generate_transactions(four, 5, END, SHOP))
    assertDataFrameEqual(
        generate_events(one, 5, END, SHOP, KINDS), generate_events(four, 5, END, SHOP, KINDS)
    )
    different = generate_customers(spark, 300, seed=6, end_date=END, partitions=1)
    assert (
        generate_transactions(different, 6, END, SHOP).count()
        != generate_transactions(one, 5, END, SHOP).count()
    )


def test_personas_appear_in_their_planted_shares(spark):
    people = generate_customers(spark, 20000, seed=1, end_date=END, partitions=2)
    shares = {row["persona"]: row["count"] / 20000 for row in people.groupBy("persona").count().collect()}
    total_weight = sum(persona.weight for persona in PERSONAS)
    for persona in PERSONAS:
        assert abs(shares[persona.name] - persona.weight / total_weight) < 0.015, persona.name


def test_personas_differ_in_timing_returns_and_tails_and_some_never_browse(spark):
    people = generate_customers(spark, 2000, seed=2, end_date=END, partitions=2)
    transactions = generate_transactions(people, 2, END, SHOP).join(
        people.select("customer_id", "persona"), "customer_id"
    )
    purchases = transactions.where(~F.col("is_return"))
    lapsed_last = purchases.where(F.col("persona") == "lapsed_customer").agg(F.max("timestamp")).first()[0]
    assert lapsed_last < dt.datetime(2024, 11, 7)  # 420 days before the end date
    weekend = {
        row["persona"]: row["share"]
        for row in purchases.groupBy("persona")
        .agg(F.avg(F.dayofweek("timestamp").isin(1, 7).cast("double")).alias("share"))
        .collect()
    }
    assert weekend["bargain_hunter"] > weekend["loyal_high_spender"] + 0.2
    returns = transactions.where(F.col("is_return"))
    assert returns.where(F.col("amount") >= 0).count() == 0 and returns.count() > 0
    assert transactions.agg(F.max("timestamp")).first()[0] < dt.datetime(2026, 1, 1)
    # heavy tail: the largest purchase is far above the 99th percentile
    p99, top = purchases.agg(F.percentile_approx("amount", 0.99), F.max("amount")).first()
    assert top > 5 * p99
    browsing = generate_events(people, 2, END, SHOP, KINDS).select("customer_id").distinct().count()
    assert 0 < browsing < 2000


def test_engagement_spreads_activity_within_a_persona_around_the_same_mean(spark):
    def orders_per_customer(spread: float):  # type: ignore[no-untyped-def]
        people = generate_customers(spark, 1500, seed=4, end_date=END, partitions=2, engagement_spread=spread)
        loyal = people.where(F.col("persona") == "loyal_high_spender")
        orders = (
            generate_transactions(loyal, 4, END, SHOP)
            .groupBy("customer_id")
            .agg(F.countDistinct("order_id").alias("orders"))
        )
        return orders.agg(F.avg("orders"), F.stddev("orders"), F.max("orders")).first()

    plain_mean, plain_sd, plain_max = orders_per_customer(0.0)
    spread_mean, spread_sd, spread_max = orders_per_customer(1.0)
    assert abs(spread_mean - plain_mean) < 0.15 * plain_mean  # the multiplier has mean 1
    assert spread_sd > 2.5 * plain_sd and spread_max > 3 * plain_max


def test_persona_contrast_moves_personas_toward_their_average():
    assert contrasted_personas(1.0) == PERSONAS
    alike = contrasted_personas(0.0)
    assert len({(p.orders_mean, p.amount_log_mean, p.category_weights, p.active_days) for p in alike}) == 1
    assert [p.name for p in alike] == [p.name for p in PERSONAS]
    half = contrasted_personas(0.5)
    for planted, blended, average in zip(PERSONAS, half, alike, strict=True):
        assert blended.amount_log_mean == pytest.approx(
            (planted.amount_log_mean + average.amount_log_mean) / 2
        )
        assert sum(blended.category_weights) == pytest.approx(1.0)
        assert blended.weight == planted.weight


def test_domains_change_the_vocabulary(spark):
    people = generate_customers(spark, 200, seed=3, end_date=END, partitions=1)
    categories = {
        row[0]
        for row in generate_transactions(people, 3, END, DOMAINS["banking"])
        .select("category")
        .distinct()
        .collect()
    }
    assert categories <= set(DOMAINS["banking"].categories) and "travel" in categories
    app_kinds = {
        "view": "screen_view",
        "search": "search",
        "add_to_cart": "add_to_basket",
        "purchase": "iap_purchase",
    }
    types = {
        row[0]
        for row in generate_events(people, 3, END, DOMAINS["mobile_app"], app_kinds)
        .select("event_type")
        .distinct()
        .collect()
    }
    assert types == set(app_kinds.values())


def test_dirty_rate_injects_every_row_problem_and_validation_accounts_for_each_row(spark, make_config):
    config = make_config("generate.customers=400", "generate.dirty_rate=0.1")
    counts = generate(spark, config)
    inputs = read_inputs(spark, config)
    raw = config.input.database
    transactions = inputs.counts[f"{raw}.transactions"]
    assert set(transactions) == {
        "accepted",
        NULL_CUSTOMER,
        BAD_TIMESTAMP,
        BAD_AMOUNT,
        AFTER_SNAPSHOT,
        DUPLICATE_TRANSACTION,
    }
    assert sum(transactions.values()) == counts.transactions
    quarantined = counts.transactions - transactions["accepted"]
    assert 0.05 * counts.transactions < quarantined < 0.15 * counts.transactions
    assert set(inputs.counts[f"{raw}.events"]) == {"accepted", NULL_CUSTOMER, BAD_TIMESTAMP, AFTER_SNAPSHOT}
    assert set(inputs.counts[f"{raw}.customers"]) == {"accepted", NULL_CUSTOMER, DUPLICATE_CUSTOMER}
    assert sum(inputs.counts[f"{raw}.customers"].values()) == counts.customers
    # Rows after the snapshot are counted outside the window; the quarantine holds the defects.
    assert inputs.rejected.count() == sum(quarantined_rows(table) for table in inputs.counts.values())
    assert outside_window_rows(inputs.counts[f"{raw}.transactions"]) == transactions[AFTER_SNAPSHOT] > 0
