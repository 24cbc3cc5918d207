"""Point-in-time customer features and the saved preprocessing pipeline that scales them.

Every feature is computed as of a snapshot date from rows up to the end of that day only, so a
snapshot's features never see its future. Each table contributes the features its mapped columns
allow: transactions alone give RFM, timing and returns; a category, channel, discount, quantity or
order column adds its family; events and customers tables add browsing and demographics. Every
feature is described by a `FeatureSpec` (family, source, transformation), written with population
statistics to the `feature_catalog` table and shown by `seg features --describe`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    Imputer,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from seglib import fs
from seglib.config import EventsInput, SeglibConfig, validate_identifier
from seglib.errors import InputDataError
from seglib.inputs import InputTables, read_inputs
from seglib.paths import join_uri, mask_credentials, resolve_uri
from seglib.session import session_time_zone
from seglib.validation import QUARANTINE_TABLE, end_of_day
from seglib.warehouse import SNAPSHOT_COLUMN, Warehouse

log = logging.getLogger(__name__)

FEATURES_TABLE = "customer_features"
CATALOG_TABLE = "feature_catalog"
FEATURE_VECTOR_COLUMN = "features"
UNKNOWN = "unknown"

Transform = Literal["log1p", "scale", "flag", "one-hot"]
Fill = Literal["zero", "cap", "impute", "none"]
DAYPARTS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))


@dataclass(frozen=True)
class FeatureSpec:
    """One raw feature: what it means and how the pipeline treats it.

    fill says what a customer without rows in the source gets: zero (counts, amounts, shares),
    cap (days since: the recency cap), impute (the pipeline's median) or none (always defined).
    """

    name: str
    family: str
    source: str
    transform: Transform
    fill: Fill
    description: str


@dataclass(frozen=True)
class FeatureSettings:
    snapshot: dt.date
    windows_days: tuple[int, ...] = (30, 90, 365)
    trend_window_days: int = 90
    recency_cap_days: float = 730.0
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    event_types: dict[str, list[str]] = field(default_factory=dict)
    session_gap_minutes: int = 30
    min_rate_support: int = 3
    timezone: str = "UTC"  # the zone whose midnight ends the snapshot day

    @property
    def cutoff(self) -> dt.datetime:
        """The first instant after the snapshot day: only rows before it are visible."""
        return end_of_day(self.snapshot, self.timezone)


def slug_column(prefix: str, value: str) -> str:
    """`<prefix>_<value>`; a value that is not already a plain lower-case name gets a hash suffix,
    so that "Home & Garden" and "home_garden" can never collide."""
    slug = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
    digest = hashlib.sha1(value.encode("utf-8")).hexdigest()[:6]
    if slug != value:
        slug = f"{slug}_{digest}".lstrip("_")
    name = f"{prefix}_{slug}"
    if len(name) > 128:
        # Cut the readable part, never the hash: two long values that share their first 128 characters
        # must not become one column.
        name = f"{prefix}_{slug}"[: 128 - len(digest) - 1].rstrip("_") + f"_{digest}"
    return validate_identifier(name, "feature name")


def category_share_column(category: str) -> str:
    return slug_column("share", category)


def channel_share_column(channel: str) -> str:
    return slug_column("channel_share", channel)


SpecMaker = Callable[[str, str, Transform, Fill, str], FeatureSpec]


def spec_maker(source: str) -> SpecMaker:
    """FeatureSpec(name, family, transform, fill, description) for features of one source table."""

    def make(name: str, family: str, transform: Transform, fill: Fill, description: str) -> FeatureSpec:
        return FeatureSpec(name, family, source, transform, fill, description)

    return make


def days_before(moment: Column, snapshot: dt.date) -> Column:
    return F.datediff(F.lit(snapshot), F.to_date(moment)).cast("double")


def safe_ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def supported_ratio(numerator: Column, denominator: Column, support: int) -> Column:
    """A rate only where its denominator reaches `support` (null below: imputed later), because a rate
    over one or two events is 0 or 1 and would set customers apart on noise."""
    return F.when(denominator >= support, numerator / denominator)


def _count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, 1).otherwise(0)).cast("double")


def _sum_if(condition: Column, value: Column) -> Column:
    return F.sum(F.when(condition, value).otherwise(0.0)).cast("double")


# ---------------------------------------------------------------------------------------------
# Transactions


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
            for name, start, end in DAYPARTS
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
    snapshot = settings.snapshot
    returned = F.col("amount") < 0
    if "is_return" in columns:
        returned = returned | F.coalesce(F.col("is_return"), F.lit(False))
    visible = (
        transactions.where(F.col("timestamp") < F.lit(settings.cutoff))
        .select(
            "*",
            returned.alias("_return"),
            F.when(returned, -F.abs(F.col("amount"))).otherwise(F.col("amount")).alias("_signed"),
            F.datediff(F.lit(snapshot), F.to_date("timestamp")).alias("_age"),
            (F.col("order_id") if "order_id" in columns else F.col("timestamp").cast("string")).alias(
                "_basket"
            ),
        )
        .repartition("customer_id")
    )
    purchase = ~F.col("_return")
    amount, age = F.col("amount"), F.col("_age")
    per_basket = [
        F.min(F.when(purchase, F.col("timestamp"))).alias("_ts"),
        _count_if(purchase).alias("_purchase_lines"),
        _count_if(F.col("_return")).alias("_returns"),
        _sum_if(purchase, amount).alias("_spend"),
        F.sum("_signed").alias("_signed"),
        F.max(F.when(purchase, amount)).alias("_max"),
        _count_if(purchase & F.dayofweek("timestamp").isin(1, 7)).alias("_weekend"),
        *[
            _count_if(purchase & (F.hour("timestamp") >= start) & (F.hour("timestamp") < end)).alias(
                f"_{name}"
            )
            for name, start, end in DAYPARTS
        ],
        _sum_if(purchase & (age < settings.trend_window_days), amount).alias("_recent"),
        _sum_if(
            purchase & (age >= settings.trend_window_days) & (age < 2 * settings.trend_window_days), amount
        ).alias("_previous"),
        *[_sum_if(age < days, F.col("_signed")).alias(f"_signed_{days}") for days in settings.windows_days],
    ]
    if "quantity" in columns:
        per_basket.append(_sum_if(purchase, F.coalesce(F.col("quantity"), F.lit(1.0))).alias("_units"))
    if "category" in columns:
        per_basket += [
            _sum_if(purchase & (F.col("category") == category), amount).alias(f"_category_{index}")
            for index, category in enumerate(settings.categories)
        ]
    if "channel" in columns:
        per_basket += [
            _count_if(purchase & (F.col("channel") == channel)).alias(f"_channel_{index}")
            for index, channel in enumerate(settings.channels)
        ]
    if "discount" in columns:
        per_basket.append(_count_if(purchase & (F.col("discount") > 0)).alias("_discounted"))
    baskets = visible.groupBy("customer_id", "_basket").agg(*per_basket)

    # Days from the previous purchase basket; baskets at the same second are one moment, not a 0 gap.
    earlier = Window.partitionBy("customer_id").orderBy("_ts").rowsBetween(Window.unboundedPreceding, -1)
    gap_seconds = F.unix_timestamp("_ts") - F.unix_timestamp(F.max("_ts").over(earlier))
    baskets = baskets.withColumn("_gap", F.when(gap_seconds > 0, gap_seconds / 86400.0))
    basket_age = F.datediff(F.lit(snapshot), F.to_date("_ts"))
    summed = [
        name
        for name in baskets.columns
        if name.startswith("_") and name not in ("_basket", "_ts", "_max", "_gap")
    ]
    totals = baskets.groupBy("customer_id").agg(
        F.max("_ts").alias("_last"),
        F.min("_ts").alias("_first"),
        F.count("_ts").cast("double").alias("frequency"),
        *[_count_if(basket_age < days).alias(f"frequency_{days}d") for days in settings.windows_days],
        F.max("_max").alias("_max"),
        F.avg("_gap").alias("_gap_mean"),
        F.stddev_pop("_gap").alias("_gap_std"),
        *[F.sum(name).alias(name) for name in summed],
    )
    if "category" in columns:
        totals = totals.join(_entropy_and_breadth(visible, purchase), "customer_id", "left")

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
    for name, _, _ in DAYPARTS:
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
    names = [spec.name for spec in transaction_feature_specs(columns, settings)]
    return totals.select("customer_id", *[output[name].cast("double").alias(name) for name in names])


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


# ---------------------------------------------------------------------------------------------
# Events


def event_feature_specs(columns: list[str], settings: FeatureSettings) -> list[FeatureSpec]:
    spec = spec_maker("events")
    specs = [
        spec("sessions", "browsing", "log1p", "zero", "visits (sessions) up to the snapshot"),
        spec("events_per_session", "browsing", "log1p", "zero", "events per visit"),
        spec("days_since_last_visit", "browsing", "scale", "cap", "days since the last event"),
        *[
            spec(f"sessions_{days}d", "browsing", "log1p", "zero", f"visits in the last {days} days")
            for days in settings.windows_days
        ],
    ]
    if "event_type" in columns:
        specs += [
            spec("views", "browsing", "log1p", "zero", "view events"),
            spec("searches", "browsing", "log1p", "zero", "search events"),
            spec("add_to_carts", "browsing", "log1p", "zero", "add-to-cart events"),
            spec("purchase_events", "browsing", "log1p", "zero", "purchase events"),
            # Rates need features.min_rate_support visits (views, carts); below it they are empty (imputed).
            spec("add_to_cart_rate", "conversion", "scale", "impute", "visits with an add-to-cart / visits"),
            spec("view_to_purchase", "conversion", "scale", "impute", "purchase events / view events (at most 1)"),
            spec("cart_abandonment", "conversion", "scale", "impute", "visits with a cart but no purchase / visits with a cart"),
        ]  # fmt: skip
    if "category" in columns:
        specs.append(spec("distinct_browse_categories", "browsing", "log1p", "zero", "categories browsed"))
    return specs


def event_kind(event_types: dict[str, list[str]]) -> Column:
    """The seglib kind (view, search, add_to_cart, purchase) of each event, from the configured values."""
    kind = F.lit(None).cast("string")
    normalised = F.lower(F.col("event_type"))
    for name, values in reversed(list(event_types.items())):
        kind = F.when(normalised.isin(*[value.lower() for value in values]), F.lit(name)).otherwise(kind)
    return kind


def event_features(events: DataFrame, settings: FeatureSettings) -> DataFrame:
    """Sessions, browsing counts and conversion per customer; one row per customer with a visible event."""
    columns = events.columns
    snapshot = settings.snapshot
    # One shuffle by customer serves the session window and both aggregation levels.
    visible = events.where(F.col("timestamp") < F.lit(settings.cutoff)).repartition("customer_id")
    if "session_id" in columns:
        sessions = visible.withColumn("_session", F.col("session_id"))
    else:
        ordered = Window.partitionBy("customer_id").orderBy("timestamp")
        gap = F.unix_timestamp("timestamp") - F.unix_timestamp(F.lag("timestamp").over(ordered))
        starts = F.when(gap.isNull() | (gap > settings.session_gap_minutes * 60), 1).otherwise(0)
        sessions = visible.withColumn("_starts", starts).withColumn(
            "_session",
            F.sum("_starts").over(ordered.rowsBetween(Window.unboundedPreceding, 0)).cast("string"),
        )
    if "event_type" in columns:
        sessions = sessions.withColumn("_kind", event_kind(settings.event_types))
    per_session = [
        F.count(F.lit(1)).alias("_events"),
        F.min("timestamp").alias("_start"),
        F.max("timestamp").alias("_end"),
    ]
    if "event_type" in columns:
        per_session += [
            _count_if(F.col("_kind") == kind).alias(f"_{kind}")
            for kind in ("view", "search", "add_to_cart", "purchase")
        ]
    by_session = sessions.groupBy("customer_id", "_session").agg(*per_session)

    age = F.datediff(F.lit(snapshot), F.to_date("_start"))
    per_customer = [
        F.count(F.lit(1)).cast("double").alias("sessions"),
        F.sum("_events").cast("double").alias("_events"),
        F.max("_end").alias("_last"),
        *[_count_if(age < days).alias(f"sessions_{days}d") for days in settings.windows_days],
    ]
    if "event_type" in columns:
        per_customer += [
            F.sum(f"_{kind}").alias(f"_{kind}") for kind in ("view", "search", "add_to_cart", "purchase")
        ]
        with_cart = F.col("_add_to_cart") > 0
        per_customer += [
            _count_if(with_cart).alias("_cart_sessions"),
            _count_if(with_cart & (F.col("_purchase") == 0)).alias("_abandoned"),
        ]
    totals = by_session.groupBy("customer_id").agg(*per_customer)
    if "category" in columns:
        browsed = (
            visible.where(F.col("category").isNotNull())
            .groupBy("customer_id", "category")
            .agg(F.count(F.lit(1)).alias("_rows"))
            .groupBy("customer_id")
            .agg(F.count(F.lit(1)).cast("double").alias("_browsed"))
        )
        totals = totals.join(browsed, "customer_id", "left")

    support = settings.min_rate_support
    output: dict[str, Column] = {
        "sessions": F.col("sessions"),
        "events_per_session": safe_ratio(F.col("_events"), F.col("sessions")),
        "days_since_last_visit": days_before(F.col("_last"), snapshot),
        **{f"sessions_{days}d": F.col(f"sessions_{days}d") for days in settings.windows_days},
    }
    if "event_type" in columns:
        output.update(
            views=F.col("_view"),
            searches=F.col("_search"),
            add_to_carts=F.col("_add_to_cart"),
            purchase_events=F.col("_purchase"),
            add_to_cart_rate=supported_ratio(F.col("_cart_sessions"), F.col("sessions"), support),
            # least() skips nulls: the cap goes on the numerator so that a missing rate stays missing.
            view_to_purchase=supported_ratio(
                F.least(F.col("_purchase"), F.col("_view")), F.col("_view"), support
            ),
            cart_abandonment=supported_ratio(F.col("_abandoned"), F.col("_cart_sessions"), support),
        )
    if "category" in columns:
        output["distinct_browse_categories"] = F.coalesce(F.col("_browsed"), F.lit(0.0))
    names = [spec.name for spec in event_feature_specs(columns, settings)]
    return totals.select("customer_id", *[output[name].cast("double").alias(name) for name in names])


# ---------------------------------------------------------------------------------------------
# Customers


def customer_attributes(customers: DataFrame, snapshot: dt.date) -> DataFrame:
    """Age, signup tenure, categorical and numeric attributes of customers signed up by the snapshot."""
    columns = customers.columns
    signed_up = customers
    if "signup_date" in columns:
        signed_up = customers.where(F.col("signup_date").isNull() | (F.col("signup_date") <= F.lit(snapshot)))
    selected: list[Column] = [F.col("customer_id")]
    if "age" in columns:
        selected.append(F.col("age").cast("double").alias("age"))
    elif "birth_date" in columns:
        years = F.floor(F.months_between(F.lit(snapshot), F.col("birth_date")) / 12)
        selected.append(F.when(years >= 0, years).cast("double").alias("age"))
    if "signup_date" in columns:
        selected.append(days_before(F.col("signup_date"), snapshot).alias("signup_tenure_days"))
    numeric_names, categorical_names = _attribute_names(customers)
    selected += [F.col(name).cast("double").alias(name) for name in numeric_names]
    selected += [
        F.coalesce(F.lower(F.trim(F.col(name))), F.lit(UNKNOWN)).alias(name)
        for name in ("gender", "region", *categorical_names)
        if name in columns
    ]
    return signed_up.select(*selected)


def _attribute_names(customers: DataFrame) -> tuple[list[str], list[str]]:
    """Numeric (double after `seglib.inputs.canonical_frame`) and categorical (string) `attr_` columns."""
    numeric: list[str] = []
    categorical: list[str] = []
    for field_ in customers.schema.fields:
        if field_.name.startswith("attr_"):
            (numeric if field_.dataType.typeName() == "double" else categorical).append(field_.name)
    return numeric, categorical


def customer_feature_specs(customers: DataFrame) -> tuple[list[FeatureSpec], list[FeatureSpec]]:
    numeric_attributes, categorical_attributes = _attribute_names(customers)
    spec = spec_maker("customers")
    numeric = []
    columns = customers.columns
    if "age" in columns or "birth_date" in columns:
        numeric.append(spec("age", "demographics", "scale", "impute", "age in years at the snapshot"))
    if "signup_date" in columns:
        numeric.append(spec("signup_tenure_days", "tenure", "scale", "impute", "days since signing up"))
    numeric += [
        spec(name, "attributes", "scale", "impute", f"customer attribute {name[5:]}")
        for name in numeric_attributes
    ]
    categorical = [
        FeatureSpec(name, "demographics" if name in ("gender", "region") else "attributes", "customers",
                    "one-hot", "none", f"{name.removeprefix('attr_')}, lower-cased, unknown when missing")
        for name in ("gender", "region", *categorical_attributes)
        if name in columns
    ]  # fmt: skip
    return numeric, categorical


# ---------------------------------------------------------------------------------------------
# All features, one row per customer


@dataclass(frozen=True)
class FeatureSet:
    """The raw features of a run, in model-input order: scaled numerics, 0/1 flags, one-hot categoricals."""

    numeric: list[FeatureSpec]
    flags: list[FeatureSpec]
    categorical: list[FeatureSpec]

    @property
    def specs(self) -> list[FeatureSpec]:
        return [*self.numeric, *self.flags, *self.categorical]


def _availability_flag(name: str, source: str, what: str) -> FeatureSpec:
    return FeatureSpec(name, "availability", source, "flag", "zero", f"1 when the customer has {what}")


def _filled(spec: FeatureSpec, cap: float) -> Column:
    column = F.col(spec.name)
    if spec.fill == "zero":
        return F.coalesce(column, F.lit(0.0)).alias(spec.name)
    if spec.fill == "cap":
        # Never bought or never visited reads as "as long ago as we look back".
        return F.least(F.coalesce(column, F.lit(cap)), F.lit(cap)).alias(spec.name)
    if spec.transform == "one-hot":
        return F.coalesce(column, F.lit(UNKNOWN)).alias(spec.name)
    return column


def build_features(
    transactions: DataFrame,
    customers: DataFrame | None,
    events: DataFrame | None,
    settings: FeatureSettings,
) -> tuple[DataFrame, FeatureSet]:
    """One row per customer seen in any table by the snapshot, every feature well defined.

    A customer absent from a table gets zeros, the recency cap or (for demographics) a null that the
    pipeline imputes, and the table's availability flag says which.
    """
    parts: list[tuple[DataFrame, list[FeatureSpec], FeatureSpec]] = [
        (
            transaction_features(transactions, settings),
            transaction_feature_specs(transactions.columns, settings),
            _availability_flag("has_purchases", "transactions", "transactions up to the snapshot"),
        )
    ]
    categorical: list[FeatureSpec] = []
    if events is not None:
        parts.append(
            (
                event_features(events, settings),
                event_feature_specs(events.columns, settings),
                _availability_flag("has_events", "events", "events up to the snapshot"),
            )
        )
    if customers is not None:
        numeric_specs, categorical = customer_feature_specs(customers)
        parts.append(
            (
                customer_attributes(customers, settings.snapshot),
                [*numeric_specs, *categorical],
                _availability_flag("has_demographics", "customers", "a row in the customers table"),
            )
        )
    joined: DataFrame | None = None
    for frame, _, flag in parts:
        flagged = frame.withColumn(flag.name, F.lit(1.0))
        joined = flagged if joined is None else joined.join(flagged, "customer_id", "full")
    assert joined is not None
    numeric = [spec for _, specs, _ in parts for spec in specs if spec.transform in ("log1p", "scale")]
    flags = [flag for _, _, flag in parts]
    feature_set = FeatureSet(numeric, flags, categorical)
    raw = joined.select(
        F.col("customer_id"),
        F.lit(settings.snapshot).alias(SNAPSHOT_COLUMN),
        *[_filled(spec, settings.recency_cap_days) for spec in feature_set.specs],
    )
    return raw, feature_set


# ---------------------------------------------------------------------------------------------
# Preprocessing pipeline and metadata


def preprocessing_pipeline(feature_set: FeatureSet, all_null: frozenset[str] = frozenset()) -> Pipeline:
    """Signed log1p of heavy tails, median imputation, standard scaling; flags and one-hots stay 0/1.

    Flags and one-hot slots are not standardised: that would give a rare region a weight of several
    standard deviations and let a noise attribute dominate the embedding. A feature that is null for
    every customer at fitting time (no median exists) is fixed at 0 in every row.
    """
    numeric = feature_set.numeric

    def value(name: str) -> str:
        return "CAST(0.0 AS DOUBLE)" if name in all_null else f"`{name}`"

    prepared = [
        f"signum({value(spec.name)}) * log1p(abs({value(spec.name)})) AS `{spec.name}__in`"
        if spec.transform == "log1p"
        else f"{value(spec.name)} AS `{spec.name}__in`"
        for spec in numeric
    ]
    model_inputs = [f"{spec.name}__in" for spec in numeric]
    imputed = [f"{name}__imputed" for name in model_inputs]
    categorical = [spec.name for spec in feature_set.categorical]
    stages: list[Any] = [
        SQLTransformer(statement=f"SELECT {', '.join(['*', *prepared])} FROM __THIS__"),
        Imputer(inputCols=model_inputs, outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol="_numeric"),
        StandardScaler(inputCol="_numeric", outputCol="_numeric_scaled", withMean=True, withStd=True),
    ]
    if categorical:
        stages += [
            StringIndexer(
                inputCols=categorical,
                outputCols=[f"{name}__index" for name in categorical],
                handleInvalid="keep",
                stringOrderType="alphabetAsc",
            ),
            # The indexer maps unseen values to its extra index, so the encoder never sees one.
            OneHotEncoder(
                inputCols=[f"{name}__index" for name in categorical],
                outputCols=[f"{name}__onehot" for name in categorical],
                dropLast=False,
            ),
        ]
    stages.append(
        VectorAssembler(
            inputCols=[
                "_numeric_scaled",
                *[spec.name for spec in feature_set.flags],
                *[f"{name}__onehot" for name in categorical],
            ],
            outputCol="_scaled",
        )
    )
    return Pipeline(stages=stages)


def vector_slot_names(model: PipelineModel, feature_set: FeatureSet) -> list[str]:
    slots = [spec.name for spec in [*feature_set.numeric, *feature_set.flags]]
    indexers = [stage for stage in model.stages if hasattr(stage, "labelsArray")]
    if indexers:
        for spec, labels in zip(feature_set.categorical, indexers[0].labelsArray, strict=True):
            # handleInvalid="keep" adds one slot for values not seen when fitting
            slots += [f"{spec.name}={label}" for label in [*labels, "__unseen__"]]
    return slots


def apply_preprocessing(model: PipelineModel, raw: DataFrame) -> DataFrame:
    """Raw features in, raw features plus the scaled `features` array<float> out."""
    scaled = model.transform(raw).withColumn(
        FEATURE_VECTOR_COLUMN, vector_to_array(F.col("_scaled"), "float32")
    )
    return scaled.select(*raw.columns, FEATURE_VECTOR_COLUMN)


@dataclass(frozen=True)
class FeatureMetadata:
    """What the preprocessing pipeline was fitted on; saved beside it and reused with it."""

    features: list[dict[str, str]]  # FeatureSpec fields, in model-input order
    categories: list[str]
    channels: list[str]
    windows_days: list[int]
    trend_window_days: int
    vector_slots: list[str]
    fitted_snapshot: str
    version: str = ""  # the preprocessing version (its folder name under model_dir/preprocessing)

    @property
    def dimension(self) -> int:
        return len(self.vector_slots)

    @property
    def numeric_features(self) -> list[str]:
        """Features with a numeric raw value (everything but the one-hot categoricals)."""
        return [spec["name"] for spec in self.features if spec["transform"] != "one-hot"]

    @property
    def feature_names(self) -> list[str]:
        return [spec["name"] for spec in self.features]


PREPROCESSING_POINTER = "CURRENT"
PREPROCESSING_VERSION_COLUMN = "preprocessing_version"


def preprocessing_root(config: SeglibConfig) -> str:
    return join_uri(resolve_uri(config.storage.model_dir), "preprocessing")


def preprocessing_uri(config: SeglibConfig, version: str) -> str:
    """One folder per fitted pipeline (`pipeline/` and `metadata.json`), never rewritten once complete."""
    return join_uri(preprocessing_root(config), version)


def new_preprocessing_version(snapshot: dt.date) -> str:
    return f"pp-{snapshot:%Y%m%d}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"


def current_preprocessing_version(spark: SparkSession, config: SeglibConfig) -> str | None:
    """The version that `seg features` applies unless told otherwise; None before the first fit."""
    root = preprocessing_root(config)
    pointer = join_uri(root, PREPROCESSING_POINTER)
    if fs.exists(spark, pointer):
        return fs.read_text(spark, pointer).strip()
    if fs.exists(spark, join_uri(root, "metadata.json")):
        raise InputDataError(
            f"the preprocessing pipeline under {mask_credentials(root)} was saved by an older seglib, unversioned; "
            "run `seg features --set features.refit=true` to fit a versioned one, then retrain"
        )
    return None


def load_feature_metadata(
    spark: SparkSession, config: SeglibConfig, version: str | None = None
) -> FeatureMetadata:
    """The metadata of one preprocessing version (default: the current one)."""
    version = version or current_preprocessing_version(spark, config)
    if version is None:
        raise InputDataError(
            f"no preprocessing pipeline under {mask_credentials(preprocessing_root(config))}; run `seg features` first"
        )
    uri = join_uri(preprocessing_uri(config, version), "metadata.json")
    if not fs.exists(spark, uri):
        raise InputDataError(
            f"preprocessing version {version} has no metadata at {mask_credentials(uri)}; run `seg features` for "
            "the snapshot again (with features.refit=true for a new version) and retrain"
        )
    return FeatureMetadata(**json.loads(fs.read_text(spark, uri)))


def snapshot_preprocessing_version(features: DataFrame, table: str, snapshot: dt.date) -> str:
    """The preprocessing version that scaled a snapshot's customer_features (one per snapshot)."""
    if PREPROCESSING_VERSION_COLUMN not in features.columns:
        raise InputDataError(
            f"{table} of snapshot {snapshot} was written by an older seglib and does not record its "
            "preprocessing version; run `seg features` for the snapshot again"
        )
    row = features.agg(
        F.min(PREPROCESSING_VERSION_COLUMN).alias("low"), F.max(PREPROCESSING_VERSION_COLUMN).alias("high")
    ).first()
    if row is None or row["low"] is None or row["low"] != row["high"]:
        raise InputDataError(
            f"{table} of snapshot {snapshot} does not hold exactly one preprocessing version; run `seg features` "
            "for the snapshot again"
        )
    return str(row["low"])


def require_preprocessing(expected: str, found: str, what: str, snapshot: dt.date) -> None:
    """Stop when features scaled by one preprocessing version would meet a model trained on another."""
    if expected != found:
        raise InputDataError(
            f"{what} expects features scaled by preprocessing version {expected}, but customer_features of "
            f"snapshot {snapshot} were scaled by {found}. Run `seg features` for the snapshot with the model's "
            f"version (seg score does this itself), or retrain on features of version {found}"
        )


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


@dataclass(frozen=True)
class FeaturesResult:
    metadata: FeatureMetadata
    customers: int
    input_counts: dict[str, dict[str, int]]

    @property
    def dimension(self) -> int:
        return self.metadata.dimension

    def format(self) -> str:
        lines = [f"wrote customer_features: {self.customers} customers, {self.dimension} model inputs"]
        for table, counts in self.input_counts.items():
            total = sum(counts.values())
            quarantined = total - counts["accepted"]
            lines.append(
                f"  {table}: {total} rows = {counts['accepted']} accepted + {quarantined} quarantined"
            )
        return "\n".join(lines)


def _settings(config: SeglibConfig, categories: list[str], channels: list[str]) -> FeatureSettings:
    events: EventsInput | None = config.input.events
    return FeatureSettings(
        snapshot=config.features.snapshot_date,
        windows_days=tuple(config.features.windows_days),
        trend_window_days=config.features.trend_window_days,
        recency_cap_days=float(config.features.recency_cap_days),
        categories=tuple(categories),
        channels=tuple(channels),
        event_types={kind: list(values) for kind, values in events.event_types.items()} if events else {},
        session_gap_minutes=events.session_gap_minutes if events else 30,
        min_rate_support=config.features.min_rate_support,
        timezone=config.features.timezone,
    )


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


def require_accepted_transactions(inputs: InputTables) -> None:
    """Stop (after the quarantine is written) when not one transaction was accepted."""
    for table, counts in inputs.counts.items():
        if table == inputs.transactions_label and counts.get("accepted", 0) == 0:
            reasons = ", ".join(f"{count} {reason}" for reason, count in counts.items() if reason != "accepted")
            raise InputDataError(
                f"table {table} (transactions): every one of its {sum(counts.values())} rows was quarantined "
                f"({reasons}); see the quarantine table for the rows. Check the column mapping in "
                "input.transactions.columns, input.transactions.timestamp_format and features.snapshot_date"
            )


def features(
    spark: SparkSession, config: SeglibConfig, preprocessing_version: str | None = None
) -> FeaturesResult:
    """Validate the inputs, compute the snapshot's features, fit or reuse the pipeline, write the tables.

    The pipeline applied is `preprocessing_version` when given (seg score passes its model's), else the
    current one; `features.refit` (or the first run) fits a new version, which becomes current only once
    the snapshot's tables are written. Days are counted in `features.timezone` (the session's time zone
    is set to it for the stage and restored after).
    """
    with session_time_zone(spark, config.features.timezone):
        return _compute_features(spark, config, preprocessing_version)


def _compute_features(
    spark: SparkSession, config: SeglibConfig, preprocessing_version: str | None
) -> FeaturesResult:
    snapshot = config.features.snapshot_date
    inputs: InputTables = read_inputs(spark, config)
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    # Rewritten on every run, also when empty, so that a rerun never keeps stale rejects.
    warehouse.write_snapshot(
        inputs.rejected.withColumn(SNAPSHOT_COLUMN, F.lit(snapshot)), database, QUARANTINE_TABLE, snapshot
    )
    require_accepted_transactions(inputs)
    version = preprocessing_version
    if version is None and not config.features.refit:
        version = current_preprocessing_version(spark, config)
    saved = load_feature_metadata(spark, config, version) if version is not None else None
    if saved is not None:
        categories, channels = saved.categories, saved.channels
    else:
        top = top_values_of(
            inputs.transactions,
            ["category", "channel"],
            snapshot,
            config.features.max_categories,
            config.features.timezone,
        )
        categories, channels = top["category"], top["channel"]
    raw, feature_set = build_features(
        inputs.transactions, inputs.customers, inputs.events, _settings(config, categories, channels)
    )
    if saved is not None:
        # Known from the configuration and the mapped columns alone: refuse before computing anything.
        names = [spec.name for spec in feature_set.specs]
        if names != saved.feature_names or list(config.features.windows_days) != saved.windows_days:
            raise InputDataError(
                f"preprocessing version {version} (fitted on snapshot {saved.fitted_snapshot}) expects the "
                f"features {saved.feature_names}, but the inputs and config now give {names}; run with "
                "features.refit=true (and retrain) to fit a new one"
            )
    # One row per customer, read by the statistics, the pipeline fit and the write: staged once as
    # Parquet under cache_dir (a folder of this run's own) rather than cached in executor memory.
    staging = join_uri(
        resolve_uri(config.storage.cache_dir), "features_staging", f"{snapshot.isoformat()}-{uuid.uuid4().hex}"
    )
    try:
        raw.write.parquet(staging)
        raw = spark.read.parquet(staging)
        customers, stats = population_statistics(raw, feature_set)
        if saved is not None and version is not None:
            model = PipelineModel.load(join_uri(preprocessing_uri(config, version), "pipeline"))
            metadata = saved
            log.info("applying preprocessing version %s (fitted on %s)", version, saved.fitted_snapshot)
        else:
            version = new_preprocessing_version(snapshot)
            model, metadata = _fit_preprocessing(spark, config, version, raw, feature_set, stats, categories, channels)
        scaled = apply_preprocessing(model, raw)
        scaled = scaled.select(
            *raw.columns, F.lit(version).alias(PREPROCESSING_VERSION_COLUMN), FEATURE_VECTOR_COLUMN
        )
        warehouse.write_snapshot(scaled, database, FEATURES_TABLE, snapshot)
        warehouse.write_snapshot(
            catalog_frame(spark, feature_set, stats, snapshot), database, CATALOG_TABLE, snapshot
        )
        if saved is None:
            # Last: a refit that fails before this point leaves the previous version current.
            fs.write_text(spark, join_uri(preprocessing_root(config), PREPROCESSING_POINTER), version)
    finally:
        fs.delete(spark, staging)
    return FeaturesResult(metadata=metadata, customers=customers, input_counts=inputs.counts)


def _fit_preprocessing(
    spark: SparkSession,
    config: SeglibConfig,
    version: str,
    raw: DataFrame,
    feature_set: FeatureSet,
    stats: FeatureStatistics,
    categories: list[str],
    channels: list[str],
) -> tuple[PipelineModel, FeatureMetadata]:
    """Fit a new preprocessing version and save it in a folder of its own."""
    snapshot = config.features.snapshot_date
    model = preprocessing_pipeline(feature_set, all_null_features(stats, feature_set)).fit(raw)
    folder = preprocessing_uri(config, version)
    model.write().save(join_uri(folder, "pipeline"))
    metadata = FeatureMetadata(
        features=[asdict(spec) for spec in feature_set.specs],
        categories=categories,
        channels=channels,
        windows_days=list(config.features.windows_days),
        trend_window_days=config.features.trend_window_days,
        vector_slots=vector_slot_names(model, feature_set),
        fitted_snapshot=snapshot.isoformat(),
        version=version,
    )
    fs.write_text(spark, join_uri(folder, "metadata.json"), json.dumps(asdict(metadata), indent=2))
    log.info(
        "fitted preprocessing version %s on snapshot %s (%d inputs)", version, snapshot, metadata.dimension
    )
    return model, metadata


def describe_features(spark: SparkSession, config: SeglibConfig) -> str:
    """The feature catalog of the configured snapshot as a text table (what `seg features --describe` prints)."""
    warehouse = Warehouse.from_config(spark, config)
    snapshot = config.features.snapshot_date
    rows = (
        warehouse.read_snapshot(config.storage.database, CATALOG_TABLE, snapshot)
        .orderBy("position")
        .collect()
    )

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4g}"

    header = ("feature", "family", "source", "transform", "mean", "stddev", "min", "max", "null%", "levels")
    table = [header] + [
        (row["feature"], row["family"], row["source"], row["transformation"], number(row["mean"]),
         number(row["stddev"]), number(row["min"]), number(row["max"]), f"{100 * row['null_share']:.1f}",
         number(row["levels"]))
        for row in rows
    ]  # fmt: skip
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = [f"feature catalog of {config.storage.database}.{FEATURES_TABLE}, snapshot {snapshot}:"]
    lines += [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    return "\n".join(lines)
