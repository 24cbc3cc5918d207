from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from seglib.generate import PERSONAS, generate_customers, generate_events, generate_transactions, uniform

END = dt.date(2025, 12, 31)


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
    assertDataFrameEqual(generate_transactions(one, 5, END), generate_transactions(four, 5, END))
    assertDataFrameEqual(generate_events(one, 5, END), generate_events(four, 5, END))
    different = generate_customers(spark, 300, seed=6, end_date=END, partitions=1)
    assert generate_transactions(different, 6, END).count() != generate_transactions(one, 5, END).count()


def test_personas_appear_in_their_planted_shares(spark):
    people = generate_customers(spark, 20000, seed=1, end_date=END, partitions=2)
    shares = {row["persona"]: row["count"] / 20000 for row in people.groupBy("persona").count().collect()}
    total_weight = sum(persona.weight for persona in PERSONAS)
    for persona in PERSONAS:
        assert abs(shares[persona.name] - persona.weight / total_weight) < 0.015, persona.name


def test_lapsed_customers_bought_only_long_ago_and_some_customers_never_browse(spark):
    people = generate_customers(spark, 2000, seed=2, end_date=END, partitions=2)
    transactions = generate_transactions(people, 2, END).join(
        people.select("customer_id", "persona"), "customer_id"
    )
    lapsed_last = (
        transactions.where(F.col("persona") == "lapsed_customer").agg(F.max("transaction_ts")).first()[0]
    )
    assert lapsed_last < dt.datetime(2024, 11, 7)  # 420 days before the end date
    assert transactions.where(F.col("amount") <= 0).count() == 0
    browsing = generate_events(people, 2, END).select("customer_id").distinct().count()
    assert 0 < browsing < 2000
