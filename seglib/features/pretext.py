"""The temporal pretext task of `train.forecast`: what the representation model learns to predict
beside reconstructing its inputs.

For every customer seen by the cut-off (the snapshot minus `train.forecast.window_days`): the features
as of the cut-off, scaled by the snapshot's own preprocessing pipeline, and what the customer did in
the window from the cut-off to the snapshot (spend, orders, whether they bought, and where the log has
them the category, channel and discount mix of that spend). Both windows precede the snapshot, so
nothing after the snapshot is used. Reconstruction alone weighs every scaled feature the same, and most
of them are sparse ratios of one or two purchases; the forecast pulls the embedding toward the
directions of a customer's history that say what comes next."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglib.contract.config import SeglibConfig
from seglib.contract.tables import (
    FEATURE_VECTOR_COLUMN,
    PRETEXT_INPUT_COLUMN,
    PRETEXT_TABLE,
    PRETEXT_TARGET_COLUMN,
    SNAPSHOT_COLUMN,
)
from seglib.features.assembly import build_features
from seglib.features.preprocessing import apply_preprocessing
from seglib.features.spec import FeatureSettings, count_if, safe_ratio
from seglib.features.transactions import basket_key, returned_line
from seglib.inputs.sources import InputTables
from seglib.inputs.validation import end_of_day
from seglib.platform.warehouse import Warehouse

log = logging.getLogger(__name__)

PRETEXT_SCHEMA = T.StructType(
    [
        T.StructField("customer_id", T.StringType()),
        T.StructField(PRETEXT_INPUT_COLUMN, T.ArrayType(T.FloatType())),
        T.StructField(PRETEXT_TARGET_COLUMN, T.ArrayType(T.FloatType())),
    ]
)


@dataclass(frozen=True)
class WindowTarget:
    name: str
    family: str  # targets of one family share one unit of weight in the forecast loss
    value: Column  # per customer, over the window; null where undefined (a mix without purchases)


@dataclass(frozen=True)
class PretextResult:
    cutoff: dt.date
    customers: int
    targets: list[str]

    def describe(self) -> str:
        if self.customers == 0:
            return f"forecast pretext: no customer seen by {self.cutoff}, training on reconstruction alone"
        return (
            f"forecast pretext: {self.customers} customers seen by {self.cutoff}, "
            f"{len(self.targets)} window targets ({', '.join(self.targets)})"
        )


def pretext_cutoff(snapshot: dt.date, window_days: int) -> dt.date:
    return snapshot - dt.timedelta(days=window_days)


def _window_aggregates(
    columns: list[str], settings: FeatureSettings
) -> tuple[list[Column], list[WindowTarget]]:
    """Per-customer sums over the window's lines, and the targets built from them."""
    purchase = ~returned_line(columns)
    basket = basket_key(columns)
    spend = F.when(purchase, F.col("amount")).otherwise(F.lit(0.0))
    sums: list[Column] = [
        F.sum(spend).alias("_spend"),
        F.countDistinct(F.when(purchase, basket)).cast("double").alias("_baskets"),
        count_if(purchase).alias("_lines"),
    ]
    targets = [
        WindowTarget("log_spend", "activity", F.log1p(F.greatest(F.col("_spend"), F.lit(0.0)))),
        WindowTarget("log_orders", "activity", F.log1p(F.col("_baskets"))),
        WindowTarget("bought", "activity", (F.col("_baskets") > 0).cast("double")),
    ]
    bought = F.col("_spend") > 0
    if "category" in columns:
        for index, category in enumerate(settings.categories):
            sums.append(
                F.sum(F.when(F.col("category") == category, spend).otherwise(F.lit(0.0))).alias(
                    f"_cat_{index}"
                )
            )
            targets.append(
                WindowTarget(
                    f"category_share:{category}",
                    "category",
                    F.when(bought, F.col(f"_cat_{index}") / F.col("_spend")),
                )
            )
    if "channel" in columns:
        for index, channel in enumerate(settings.channels):
            sums.append(count_if(purchase & (F.col("channel") == channel)).alias(f"_chan_{index}"))
            targets.append(
                WindowTarget(
                    f"channel_share:{channel}",
                    "channel",
                    F.when(F.col("_lines") > 0, safe_ratio(F.col(f"_chan_{index}"), F.col("_lines"))),
                )
            )
    if "discount" in columns:
        sums.append(count_if(purchase & (F.col("discount") > 0)).alias("_discounted"))
        targets.append(
            WindowTarget(
                "discount_share",
                "promotions",
                F.when(F.col("_lines") > 0, F.col("_discounted") / F.col("_lines")),
            )
        )
    return sums, targets


def window_behaviour(
    transactions: DataFrame, settings: FeatureSettings, start: dt.datetime, end: dt.datetime
) -> tuple[DataFrame, list[WindowTarget]]:
    """Per customer with a line in [start, end): the window's sums (one shuffle by customer)."""
    sums, targets = _window_aggregates(transactions.columns, settings)
    lines = transactions.where((F.col("timestamp") >= F.lit(start)) & (F.col("timestamp") < F.lit(end)))
    return lines.groupBy("customer_id").agg(*sums), targets


def standardized_targets(frame: DataFrame, targets: list[WindowTarget]) -> Column:
    """The targets as one array: each standardized over the customers (undefined values at the mean,
    0), and scaled so that every family carries the same weight and the whole sums to about one
    squared unit per customer."""
    families = sorted({target.family for target in targets})
    members = {family: sum(target.family == family for target in targets) for family in families}
    names = [f"_t{index}" for index in range(len(targets))]
    stats = frame.agg(
        *[F.avg(name).alias(f"{name}_mean") for name in names],
        *[F.stddev_pop(name).alias(f"{name}_sd") for name in names],
    ).first()
    assert stats is not None
    scaled: list[Column] = []
    for name, target in zip(names, targets, strict=True):
        mean, sd = stats[f"{name}_mean"], stats[f"{name}_sd"]
        if mean is None or not sd:
            scaled.append(F.lit(0.0))  # the same for everyone: nothing to predict
            continue
        unit = 1.0 / (sd * math.sqrt(members[target.family] * len(families)))
        scaled.append(F.coalesce((F.col(name) - F.lit(mean)) * F.lit(unit), F.lit(0.0)))
    return F.array(*[column.cast("float") for column in scaled])


def _write_no_pairs(spark: SparkSession, warehouse: Warehouse, database: str, snapshot: dt.date) -> None:
    """Empty the snapshot's pairs, so that a rerun never trains on an earlier run's."""
    empty = spark.createDataFrame([], PRETEXT_SCHEMA).withColumn(SNAPSHOT_COLUMN, F.lit(snapshot))
    warehouse.write_snapshot(empty, database, PRETEXT_TABLE, snapshot)


def write_pretext(
    spark: SparkSession,
    warehouse: Warehouse,
    config: SeglibConfig,
    inputs: InputTables,
    settings: FeatureSettings,
    preprocessing: PipelineModel,
) -> PretextResult | None:
    """Replace the snapshot's rows of `forecast_pretext` (emptied when train.forecast is off, so that a
    rerun never trains on an earlier run's pairs)."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    window_days = config.train.forecast.window_days
    if window_days == 0:
        if warehouse.exists(database, PRETEXT_TABLE):
            _write_no_pairs(spark, warehouse, database, snapshot)
        return None
    cutoff = pretext_cutoff(snapshot, window_days)
    earlier_settings = dataclasses.replace(settings, snapshot=cutoff)
    earlier_raw, _ = build_features(inputs.transactions, inputs.customers, inputs.events, earlier_settings)
    earlier = apply_preprocessing(preprocessing, earlier_raw).select(
        "customer_id", F.col(FEATURE_VECTOR_COLUMN).alias(PRETEXT_INPUT_COLUMN)
    )
    window, targets = window_behaviour(
        inputs.transactions,
        settings,
        end_of_day(cutoff, config.features.timezone),
        end_of_day(snapshot, config.features.timezone),
    )
    # Customers seen by the cut-off; one without a line in the window bought nothing in it.
    joined = earlier.join(window, "customer_id", "left").fillna(0.0, ["_spend", "_baskets", "_lines"])
    valued = joined.select(
        "customer_id",
        PRETEXT_INPUT_COLUMN,
        *[target.value.cast("double").alias(f"_t{index}") for index, target in enumerate(targets)],
    ).cache()
    try:
        customers = valued.count()
        if customers == 0:
            log.warning(
                "train.forecast.window_days=%d: no customer of %s is seen by the cut-off %s (the snapshot "
                "%s minus the window), so there is no earlier history to forecast from and training will "
                "use the reconstruction alone; lower train.forecast.window_days to use the forecast task, "
                "or set it to 0 to silence this",
                window_days, inputs.transactions_label, cutoff, snapshot,
            )  # fmt: skip
            _write_no_pairs(spark, warehouse, database, snapshot)
            return PretextResult(cutoff, 0, [])
        pairs = valued.select(
            "customer_id",
            PRETEXT_INPUT_COLUMN,
            standardized_targets(valued, targets).alias(PRETEXT_TARGET_COLUMN),
            F.lit(snapshot).alias(SNAPSHOT_COLUMN),
        )
        warehouse.write_snapshot(pairs, database, PRETEXT_TABLE, snapshot)
    finally:
        valued.unpersist()
    result = PretextResult(cutoff, customers, [target.name for target in targets])
    log.info(result.describe())
    return result
