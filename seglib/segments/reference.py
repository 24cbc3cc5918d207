"""Reference distributions saved with a segmentation (feature deciles and the share of customers in
each bin), against which `seg score` measures drift (`seglib.serving.drift`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

Bin = TypeVar("Bin", bound=Hashable)
MISSING_BIN = -1
DECILES = [index / 10 for index in range(1, 10)]


def decile_edges(frame: DataFrame, feature_names: list[str]) -> dict[str, list[float]]:
    """Decile edges of every feature in one pass (ties collapse: a zero-inflated feature has few bins)."""
    quantiles = frame.approxQuantile(feature_names, DECILES, 0.001)
    return {
        name: sorted(set(float(x) for x in values))
        for name, values in zip(feature_names, quantiles, strict=True)
    }


def bin_shares(frame: DataFrame, edges: Mapping[str, list[float]]) -> dict[str, dict[int, float]]:
    """Share of customers in each bin of each feature: bin i holds edges[i-1] < x <= edges[i];
    missing values go to their own bin. One Spark aggregation for all features."""
    names = sorted(edges)
    edge_map = F.create_map(
        *[item for name in names for item in (F.lit(name), F.array(*[F.lit(e) for e in edges[name]]))]
    )
    values = frame.select("customer_id", *[F.col(name).cast("double").alias(name) for name in names]).unpivot(
        ["customer_id"], list[str | Column](names), "feature", "value"
    )
    bucket = F.when(F.col("value").isNull() | F.isnan("value"), F.lit(MISSING_BIN)).otherwise(
        F.size(F.filter(edge_map[F.col("feature")], lambda edge: edge < F.col("value")))
    )
    counts = values.groupBy("feature", bucket.alias("bin")).count().collect()
    totals: dict[str, int] = {}
    for row in counts:
        totals[row["feature"]] = totals.get(row["feature"], 0) + row["count"]
    shares: dict[str, dict[int, float]] = {name: {} for name in names}
    for row in counts:
        shares[row["feature"]][int(row["bin"])] = row["count"] / totals[row["feature"]]
    return shares
