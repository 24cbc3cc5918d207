"""Transaction features: RFM, windows and trend, timing (weekdays, day parts), category and channel
mix, discounts, quantities, returns; and the top categories and channels a pipeline keeps."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from seglib.contract.domain import DAYPARTS
from seglib.features.spec import (
    FeatureSettings,
    FeatureSpec,
    category_share_column,
    channel_share_column,
    count_if,
    days_before,
    safe_ratio,
    spec_maker,
    sum_if,
)
from seglib.inputs.validation import end_of_day

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Transactions


def _dayparts(settings: FeatureSettings) -> tuple[tuple[str, int, int], ...]:
    """The day parts with a share feature: none when the log has dates only."""
    return DAYPARTS if settings.time_of_day else ()


def transaction_feature_specs(columns: list[str], settings: FeatureSettings) -> list[FeatureSpec]:
    """The transaction features that the mapped columns allow, in output order."""
    spec = spec_maker("transactions")
    # Without an order id, lines a customer bought at the same second are one basket.
    basket_unit = "orders" if "order_id" in columns else "baskets"
    specs = [
        spec("recency_days", "recency", "scale", "cap", "days since the last purchase"),
        spec("frequency", "frequency", "log1p", "zero", f"{basket_unit} up to the snapshot"),
        spec("monetary_total", "monetary", "log1p", "zero", "net spend (returns subtracted)"),
        spec("monetary_mean", "monetary", "log1p", "zero", f"mean spend per {basket_unit[:-1]}"),
        spec("monetary_max", "monetary", "log1p", "zero", "largest single purchase"),
        spec("purchase_tenure_days", "tenure", "scale", "zero", "days since the first purchase"),
        spec("interpurchase_mean_days", "timing", "log1p", "impute", "mean days between purchases"),
        spec("interpurchase_std_days", "timing", "log1p", "impute", "spread of the days between purchases"),
    ]
    for days in settings.windows_days:
        specs.append(
            spec(f"frequency_{days}d", "frequency", "log1p", "zero", f"{basket_unit} in the last {days} days")
        )
        specs.append(
            spec(f"monetary_{days}d", "monetary", "log1p", "zero", f"net spend in the last {days} days")
        )
    specs += [
        spec(
            "spend_trend", "trend", "scale", "zero",
            f"(last {settings.trend_window_days} days - the {settings.trend_window_days} before) / their sum",
        ),
        spec("return_rate", "returns", "scale", "zero", "returned lines / all lines"),
        spec("weekend_share", "timing", "scale", "zero", "purchases on Saturday or Sunday"),
        *[
            spec(f"daypart_{name}_share", "timing", "scale", "zero", f"purchases between {start}:00 and {end}:00")
            for name, start, end in _dayparts(settings)
        ],
    ]  # fmt: skip
    unit = "units" if "quantity" in columns else "lines"
    specs.append(spec("basket_size", "basket", "log1p", "zero", f"{unit} per {basket_unit[:-1]}"))
    if "category" in columns:
        specs.append(spec("distinct_categories", "category", "log1p", "zero", "categories bought from"))
        specs.append(
            spec("category_entropy", "category", "scale", "zero", "entropy of the spend over categories")
        )
        specs += [
            spec(category_share_column(c), "category", "scale", "zero", f"share of spend on {c!r}")
            for c in settings.categories
        ]
    if "channel" in columns:
        specs += [
            spec(channel_share_column(c), "channel", "scale", "zero", f"share of purchases through {c!r}")
            for c in settings.channels
        ]
    if "discount" in columns:
        specs.append(spec("discount_share", "promotions", "scale", "zero", "purchases with a discount"))
    return specs


def _entropy_and_breadth(visible: DataFrame, purchase: Column) -> DataFrame:
    """Distinct categories and the entropy (nats) of each customer's spend over all its categories.

    Two aggregation levels over rows already partitioned by customer, so neither shuffles again.
    """
    spend = (
        visible.where(purchase & F.col("category").isNotNull())
        .groupBy("customer_id", "category")
        .agg(F.sum("amount").alias("_spend"))
    )
    total = F.sum(F.col("_spend"))
    # H = log(T) - sum(s log s) / T over the positive category totals s, with T their sum
    positive = F.when(F.col("_spend") > 0, F.col("_spend"))
    return spend.groupBy("customer_id").agg(
        F.count(F.lit(1)).cast("double").alias("distinct_categories"),
        F.coalesce(
            F.log(F.sum(positive)) - F.sum(positive * F.log(positive)) / F.sum(positive), F.lit(0.0)
        ).alias("category_entropy"),
        total.alias("_category_total"),
    )


def transaction_features(transactions: DataFrame, settings: FeatureSettings) -> DataFrame:
    """One row per customer with a visible transaction; columns as in `transaction_feature_specs`.

    Lines are summed per basket (order id, or lines bought at the same second), then baskets per
    customer; everything runs after one shuffle by customer and uses only codegen-friendly
    aggregates (no collected sets or lists), so cost grows linearly with the rows.
    """
    columns = transactions.columns
    visible = _visible_lines(transactions, settings)
    baskets = visible.groupBy("customer_id", "_basket").agg(*_basket_aggregates(columns, settings))
    totals = _customer_totals(baskets, settings)
    if "category" in columns:
        totals = totals.join(_entropy_and_breadth(visible, ~F.col("_return")), "customer_id", "left")
    output = _output_columns(columns, settings)
    names = [spec.name for spec in transaction_feature_specs(columns, settings)]
    return totals.select("customer_id", *[output[name].cast("double").alias(name) for name in names])


def returned_line(columns: list[str]) -> Column:
    """A line that is a return: a negative amount, or flagged by the is_return column."""
    returned = F.col("amount") < 0
    if "is_return" in columns:
        returned = returned | F.coalesce(F.col("is_return"), F.lit(False))
    return returned


def basket_key(columns: list[str]) -> Column:
    """The basket a line belongs to: its order id, or the lines bought at the same second."""
    return F.col("order_id") if "order_id" in columns else F.col("timestamp").cast("string")


def _visible_lines(transactions: DataFrame, settings: FeatureSettings) -> DataFrame:
    """Lines before the cut-off with their return flag, signed amount, age in days and basket key,
    partitioned by customer (the one shuffle)."""
    columns = transactions.columns
    returned = returned_line(columns)
    return (
        transactions.where(F.col("timestamp") < F.lit(settings.cutoff))
        .select(
            "*",
            returned.alias("_return"),
            F.when(returned, -F.abs(F.col("amount"))).otherwise(F.col("amount")).alias("_signed"),
            F.datediff(F.lit(settings.snapshot), F.to_date("timestamp")).alias("_age"),
            basket_key(columns).alias("_basket"),
        )
        .repartition("customer_id")
    )


def _basket_aggregates(columns: list[str], settings: FeatureSettings) -> list[Column]:
    """Per basket: its moment, lines, returns, spend, timing counts, window sums and the mix columns."""
    purchase = ~F.col("_return")
    amount, age = F.col("amount"), F.col("_age")
    per_basket = [
        F.min(F.when(purchase, F.col("timestamp"))).alias("_ts"),
        count_if(purchase).alias("_purchase_lines"),
        count_if(F.col("_return")).alias("_returns"),
        sum_if(purchase, amount).alias("_spend"),
        F.sum("_signed").alias("_signed"),
        F.max(F.when(purchase, amount)).alias("_max"),
        count_if(purchase & F.dayofweek("timestamp").isin(1, 7)).alias("_weekend"),
        *[
            count_if(purchase & (F.hour("timestamp") >= start) & (F.hour("timestamp") < end)).alias(
                f"_{name}"
            )
            for name, start, end in _dayparts(settings)
        ],
        sum_if(purchase & (age < settings.trend_window_days), amount).alias("_recent"),
        sum_if(
            purchase & (age >= settings.trend_window_days) & (age < 2 * settings.trend_window_days), amount
        ).alias("_previous"),
        *[sum_if(age < days, F.col("_signed")).alias(f"_signed_{days}") for days in settings.windows_days],
    ]
    if "quantity" in columns:
        per_basket.append(sum_if(purchase, F.coalesce(F.col("quantity"), F.lit(1.0))).alias("_units"))
    if "category" in columns:
        per_basket += [
            sum_if(purchase & (F.col("category") == category), amount).alias(f"_category_{index}")
            for index, category in enumerate(settings.categories)
        ]
    if "channel" in columns:
        per_basket += [
            count_if(purchase & (F.col("channel") == channel)).alias(f"_channel_{index}")
            for index, channel in enumerate(settings.channels)
        ]
    if "discount" in columns:
        per_basket.append(count_if(purchase & (F.col("discount") > 0)).alias("_discounted"))
    return per_basket


def _customer_totals(baskets: DataFrame, settings: FeatureSettings) -> DataFrame:
    """Baskets summed per customer, with first and last purchase and the gaps between baskets."""
    # Days from the previous purchase basket; baskets at the same second are one moment, not a 0 gap.
    earlier = Window.partitionBy("customer_id").orderBy("_ts").rowsBetween(Window.unboundedPreceding, -1)
    gap_seconds = F.unix_timestamp("_ts") - F.unix_timestamp(F.max("_ts").over(earlier))
    baskets = baskets.withColumn("_gap", F.when(gap_seconds > 0, gap_seconds / 86400.0))
    basket_age = F.datediff(F.lit(settings.snapshot), F.to_date("_ts"))
    summed = [
        name
        for name in baskets.columns
        if name.startswith("_") and name not in ("_basket", "_ts", "_max", "_gap")
    ]
    return baskets.groupBy("customer_id").agg(
        F.max("_ts").alias("_last"),
        F.min("_ts").alias("_first"),
        F.count("_ts").cast("double").alias("frequency"),
        *[count_if(basket_age < days).alias(f"frequency_{days}d") for days in settings.windows_days],
        F.max("_max").alias("_max"),
        F.avg("_gap").alias("_gap_mean"),
        F.stddev_pop("_gap").alias("_gap_std"),
        *[F.sum(name).alias(name) for name in summed],
    )


def _output_columns(columns: list[str], settings: FeatureSettings) -> dict[str, Column]:
    """Every transaction feature as an expression over the customer totals."""
    snapshot = settings.snapshot
    purchases, frequency = F.col("_purchase_lines"), F.col("frequency")
    recent, previous_spend = F.col("_recent"), F.col("_previous")
    output: dict[str, Column] = {
        "recency_days": days_before(F.col("_last"), snapshot),
        "frequency": frequency,
        "monetary_total": F.col("_signed"),
        "monetary_mean": safe_ratio(F.col("_spend"), frequency),
        "monetary_max": F.coalesce(F.col("_max"), F.lit(0.0)),
        "purchase_tenure_days": F.coalesce(days_before(F.col("_first"), snapshot), F.lit(0.0)),
        "interpurchase_mean_days": F.col("_gap_mean"),
        "interpurchase_std_days": F.col("_gap_std"),
    }
    for days in settings.windows_days:
        output[f"frequency_{days}d"] = F.col(f"frequency_{days}d")
        output[f"monetary_{days}d"] = F.col(f"_signed_{days}")
    output["spend_trend"] = safe_ratio(recent - previous_spend, recent + previous_spend)
    output["return_rate"] = safe_ratio(F.col("_returns"), purchases + F.col("_returns"))
    output["weekend_share"] = safe_ratio(F.col("_weekend"), purchases)
    for name, _, _ in _dayparts(settings):
        output[f"daypart_{name}_share"] = safe_ratio(F.col(f"_{name}"), purchases)
    units = F.col("_units") if "quantity" in columns else purchases
    output["basket_size"] = safe_ratio(units, frequency)
    if "category" in columns:
        output["distinct_categories"] = F.coalesce(F.col("distinct_categories"), F.lit(0.0))
        output["category_entropy"] = F.coalesce(F.col("category_entropy"), F.lit(0.0))
        for index, category in enumerate(settings.categories):
            output[category_share_column(category)] = safe_ratio(F.col(f"_category_{index}"), F.col("_spend"))
    if "channel" in columns:
        for index, channel in enumerate(settings.channels):
            output[channel_share_column(channel)] = safe_ratio(F.col(f"_channel_{index}"), purchases)
    if "discount" in columns:
        output["discount_share"] = safe_ratio(F.col("_discounted"), purchases)
    return output


def top_values_of(
    frame: DataFrame, columns: list[str], snapshot: dt.date, limit: int, timezone: str = "UTC"
) -> dict[str, list[str]]:
    """The most frequent values of each column up to the snapshot, in one pass (a small result)."""
    present = [column for column in columns if column in frame.columns]
    result: dict[str, list[str]] = {column: [] for column in columns}
    if not present:
        return result
    pairs = F.array(
        *[F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value")) for c in present]
    )
    counts = (
        frame.where(F.col("timestamp") < F.lit(end_of_day(snapshot, timezone)))
        .select(F.explode(pairs).alias("pair"))
        .select("pair.*")
        .where(F.col("value").isNotNull())
        .groupBy("column", "value")
        .count()
    )
    rank = F.row_number().over(Window.partitionBy("column").orderBy(F.desc("count"), F.asc("value")))
    top = counts.withColumn("_rank", rank).where(F.col("_rank") <= limit).orderBy("column", "_rank").collect()
    for row in top:
        result[row["column"]].append(row["value"])
    return result
