"""Population statistics of every feature, written to the `feature_catalog` table."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.tables import (
    SNAPSHOT_COLUMN,
)
from seglib.features.spec import FeatureSet

log = logging.getLogger(__name__)

FeatureStatistics = dict[str, dict[str, float | None]]


def population_statistics(raw: DataFrame, feature_set: FeatureSet) -> tuple[int, FeatureStatistics]:
    """Mean, spread, range and null share of every numeric feature, and levels of the categoricals.

    One aggregation over the (cached) feature rows; the result is one small row. Returns the number
    of customers too.
    """
    numeric = [spec.name for spec in [*feature_set.numeric, *feature_set.flags]]
    aggregates = [F.count(F.lit(1)).alias("_rows")]
    for index, name in enumerate(numeric):
        column = F.col(name)
        aggregates += [
            F.avg(column).alias(f"mean_{index}"),
            F.stddev_pop(column).alias(f"stddev_{index}"),
            F.min(column).alias(f"min_{index}"),
            F.max(column).alias(f"max_{index}"),
            F.sum(F.when(column.isNull(), 1).otherwise(0)).alias(f"nulls_{index}"),
        ]
    for index, spec in enumerate(feature_set.categorical):
        aggregates.append(F.approx_count_distinct(spec.name).alias(f"levels_{index}"))
    row = raw.agg(*aggregates).first()
    assert row is not None
    rows = max(int(row["_rows"]), 1)
    stats: FeatureStatistics = {}
    for index, name in enumerate(numeric):
        stats[name] = {
            "mean": row[f"mean_{index}"],
            "stddev": row[f"stddev_{index}"],
            "min": row[f"min_{index}"],
            "max": row[f"max_{index}"],
            "null_share": int(row[f"nulls_{index}"]) / rows,
            "levels": None,
        }
    for index, spec in enumerate(feature_set.categorical):
        stats[spec.name] = {"mean": None, "stddev": None, "min": None, "max": None, "null_share": 0.0,
                            "levels": float(row[f"levels_{index}"])}  # fmt: skip
    return int(row["_rows"]), stats


def catalog_frame(
    spark: SparkSession, feature_set: FeatureSet, stats: FeatureStatistics, snapshot: dt.date
) -> DataFrame:
    rows = [
        (spec.name, spec.family, spec.source, spec.transform, spec.description,
         stats[spec.name]["mean"], stats[spec.name]["stddev"], stats[spec.name]["min"], stats[spec.name]["max"],
         stats[spec.name]["null_share"], stats[spec.name]["levels"], position, snapshot)
        for position, spec in enumerate(feature_set.specs)
    ]  # fmt: skip
    schema = (
        "feature string, family string, source string, transformation string, description string, "
        "mean double, stddev double, min double, max double, null_share double, levels double, "
        f"position int, {SNAPSHOT_COLUMN} date"
    )
    return spark.createDataFrame(rows, schema)


def all_null_features(stats: FeatureStatistics, feature_set: FeatureSet) -> frozenset[str]:
    """Numeric features without a single value (say, no customer bought twice): logged, then fixed at 0."""
    empty = frozenset(spec.name for spec in feature_set.numeric if stats[spec.name]["null_share"] == 1.0)
    for name in sorted(empty):
        spec = next(spec for spec in feature_set.numeric if spec.name == name)
        log.warning(
            "feature %s (from the %s table) is null for every customer; it is set to 0 for all. If it comes "
            "from a mapped column, check input.%s.columns",
            name, spec.source, spec.source,
        )  # fmt: skip
    return empty
