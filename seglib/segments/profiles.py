"""What each segment is, in raw business terms: per segment and feature, means, medians, lift and
standardized differences with their significance (the `segment_profiles` table)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

SIGNIFICANCE_LEVEL = 0.01
TOP_FEATURES = 5


def segment_profiles(members: DataFrame, feature_names: list[str]) -> DataFrame:
    """Per segment and feature (a long table): size and share; mean and median of the unscaled feature
    in the segment and in the population; lift; the standardized difference (in population standard
    deviations); Welch's t against the rest of the population and whether it is significant at 1%
    after a Bonferroni correction over all segment x feature tests; rank 1 = most distinguishing.

    `members` holds customer_id, segment_id and the raw feature columns.
    """
    per_segment, population, sizes = _feature_moments(members, feature_names)
    joined = per_segment.join(population, "feature").select(
        "segment_id",
        "feature",
        "segment_median",
        "population_median",
        *_comparisons(sizes.count(), len(feature_names)),
    )
    ranking = Window.partitionBy("segment_id").orderBy(F.abs("std_diff").desc(), "feature")
    return (
        joined.join(sizes, "segment_id")
        .withColumn("rank", F.row_number().over(ranking))
        .select(
            F.col("segment_id").cast("int"),
            F.col("segment_size").cast("long"),
            "segment_share",
            "feature",
            "segment_mean",
            "segment_median",
            "population_mean",
            "population_median",
            "lift",
            "std_diff",
            "t_statistic",
            "significant",
            F.col("rank").cast("int"),
        )
    )


def _feature_moments(members: DataFrame, feature_names: list[str]) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Counts, sums, sums of squares and medians per (segment, feature) and per feature; segment sizes."""
    values = members.unpivot(
        ["customer_id", "segment_id"], list[str | Column](feature_names), "feature", "value"
    ).where(F.col("value").isNotNull() & ~F.isnan("value"))
    per_segment = values.groupBy("segment_id", "feature").agg(
        F.count(F.lit(1)).alias("_n"),
        F.sum("value").alias("_sum"),
        F.sum(F.col("value") * F.col("value")).alias("_squares"),
        F.percentile_approx("value", 0.5, 1000).cast("double").alias("segment_median"),
    )
    population = values.groupBy("feature").agg(
        F.count(F.lit(1)).alias("_population_n"),
        F.sum("value").alias("_population_sum"),
        F.sum(F.col("value") * F.col("value")).alias("_population_squares"),
        F.percentile_approx("value", 0.5, 1000).cast("double").alias("population_median"),
    )
    sizes = (
        members.groupBy("segment_id")
        .agg(F.count(F.lit(1)).alias("segment_size"))
        .crossJoin(members.agg(F.count(F.lit(1)).alias("_customers")))
        .withColumn("segment_share", F.col("segment_size") / F.col("_customers"))
    )
    return per_segment, population, sizes


def _comparisons(segments: int, features: int) -> list[Column]:
    """Segment against population (mean, lift, standardized difference) and against the rest (Welch's t,
    significant after Bonferroni over segments x features), from the moments of `_feature_moments`."""
    from scipy.stats import norm

    critical = float(norm.isf(SIGNIFICANCE_LEVEL / 2 / max(segments * features, 1)))
    n, rest_n = F.col("_n"), F.col("_population_n") - F.col("_n")
    mean = F.col("_sum") / n
    variance = F.greatest(F.col("_squares") / n - mean * mean, F.lit(0.0))
    population_mean = F.col("_population_sum") / F.col("_population_n")
    population_sd = F.sqrt(
        F.greatest(
            F.col("_population_squares") / F.col("_population_n") - population_mean * population_mean,
            F.lit(0.0),
        )
    )
    rest_mean = (F.col("_population_sum") - F.col("_sum")) / rest_n
    rest_variance = F.greatest(
        (F.col("_population_squares") - F.col("_squares")) / rest_n - rest_mean * rest_mean, F.lit(0.0)
    )
    standard_error = F.sqrt(variance / n + rest_variance / rest_n)
    welch = F.when(standard_error > 0, (mean - rest_mean) / standard_error)
    return [
        mean.alias("segment_mean"),
        population_mean.alias("population_mean"),
        F.when(population_mean != 0, mean / population_mean).alias("lift"),
        F.when(population_sd > 0, (mean - population_mean) / population_sd).otherwise(0.0).alias("std_diff"),
        welch.alias("t_statistic"),
        F.coalesce(F.abs(welch) > critical, F.lit(False)).alias("significant"),
    ]


@dataclass(frozen=True)
class FeatureStat:
    segment_mean: float
    population_mean: float
    std_diff: float
    significant: bool
    lift: float | None
    segment_median: float | None = None

    @property
    def population_sd(self) -> float:
        """The population's standard deviation, as std_diff implies it (0 when it cannot tell)."""
        return abs(self.segment_mean - self.population_mean) / abs(self.std_diff) if self.std_diff else 0.0


@dataclass
class SegmentProfile:
    segment_id: int
    size: int
    share: float
    features: dict[str, FeatureStat] = field(default_factory=dict)

    def top(self, count: int = TOP_FEATURES) -> list[tuple[str, FeatureStat]]:
        ranked = sorted(self.features.items(), key=lambda item: (-abs(item[1].std_diff), item[0]))
        return [item for item in ranked if item[1].significant][:count]

    def describe_top(self, count: int = TOP_FEATURES) -> list[str]:
        return [
            f"{name} {readable_number(stat.segment_mean)} vs {readable_number(stat.population_mean)} "
            f"({stat.std_diff:+.2f} sd)"
            for name, stat in self.top(count)
        ]


def collect_profiles(profiles: DataFrame) -> dict[int, SegmentProfile]:
    """The long profile table (k x features rows) as objects on the driver."""
    result: dict[int, SegmentProfile] = {}
    for row in profiles.collect():
        profile = result.setdefault(
            row["segment_id"], SegmentProfile(row["segment_id"], row["segment_size"], row["segment_share"])
        )
        profile.features[row["feature"]] = FeatureStat(
            row["segment_mean"],
            row["population_mean"],
            row["std_diff"],
            row["significant"],
            row["lift"],
            row["segment_median"],
        )
    return dict(sorted(result.items()))


def readable_number(value: float) -> str:
    """3,262 / 25.7 / 0.591: thousands separated, about three significant digits, no exponent."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
