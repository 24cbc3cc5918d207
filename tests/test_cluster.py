from __future__ import annotations

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from seglib.cluster import euclidean_distance, format_summary, relabel_by_size, segment_profiles, summarize


def test_euclidean_distance_of_arrays(spark):
    df = spark.createDataFrame(
        [([0.0, 3.0], [4.0, 0.0]), ([1.0, 1.0], [1.0, 1.0])], "a array<double>, b array<double>"
    )
    assert [row[0] for row in df.select(euclidean_distance(F.col("a"), F.col("b"))).collect()] == [5.0, 0.0]


def test_segment_ids_are_ordered_by_size(spark):
    assigned = spark.createDataFrame([(c,) for c in [2, 2, 2, 0, 1, 1]], "cluster int")
    assert relabel_by_size(assigned, "cluster") == {2: 0, 1: 1, 0: 2}


def test_segment_profiles_hold_size_share_means_and_lift(spark):
    features = spark.createDataFrame(
        [(1, 10.0, 0.0), (2, 20.0, 2.0), (3, 30.0, 4.0), (4, 40.0, 6.0)],
        "customer_id long, monetary double, visits double",
    )
    segments = spark.createDataFrame([(1, 0), (2, 0), (3, 0), (4, 1)], "customer_id long, segment_id int")
    result = segment_profiles(features, segments, ["monetary", "visits"])
    expected = [
        Row(
            segment_id=0,
            segment_size=3,
            segment_share=0.75,
            feature="monetary",
            segment_mean=20.0,
            population_mean=25.0,
            lift=0.8,
        ),
        Row(
            segment_id=1,
            segment_size=1,
            segment_share=0.25,
            feature="monetary",
            segment_mean=40.0,
            population_mean=25.0,
            lift=1.6,
        ),
        Row(
            segment_id=0,
            segment_size=3,
            segment_share=0.75,
            feature="visits",
            segment_mean=2.0,
            population_mean=3.0,
            lift=pytest.approx(2 / 3),
        ),
        Row(
            segment_id=1,
            segment_size=1,
            segment_share=0.25,
            feature="visits",
            segment_mean=6.0,
            population_mean=3.0,
            lift=2.0,
        ),
    ]
    rows = sorted(result.collect(), key=lambda row: (row["feature"], row["segment_id"]))
    assert [row.asDict() for row in rows] == [row.asDict() for row in expected]


def test_lift_is_null_when_the_population_mean_is_zero(spark):
    features = spark.createDataFrame([(1, 0.0), (2, 0.0)], "customer_id long, returns double")
    segments = spark.createDataFrame([(1, 0), (2, 1)], "customer_id long, segment_id int")
    result = segment_profiles(features, segments, ["returns"]).select("segment_id", "lift")
    assertDataFrameEqual(result, [Row(segment_id=0, lift=None), Row(segment_id=1, lift=None)])


def test_summary_lists_features_above_and_below_the_population(spark):
    profiles = spark.createDataFrame(
        [
            (0, 3, 0.75, "monetary", 0.8),
            (0, 3, 0.75, "visits", 0.5),
            (0, 3, 0.75, "returns", None),
            (1, 1, 0.25, "monetary", 1.6),
            (1, 1, 0.25, "visits", 2.5),
        ],
        "segment_id int, segment_size long, segment_share double, feature string, lift double",
    )
    first, second = summarize(profiles, top=1)
    assert (first.segment_id, first.size, first.share, first.highest, first.lowest) == (
        0,
        3,
        0.75,
        [],
        [("visits", 0.5)],
    )
    assert (second.highest, second.lowest) == ([("visits", 2.5)], [])
    table = format_summary([first, second])
    assert "visits x0.50" in table.splitlines()[1] and "visits x2.50" in table.splitlines()[2]
