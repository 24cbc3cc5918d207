"""Browsing features from events: sessions, event kinds, funnel rates, recency of visits."""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from seglib.features.spec import (
    FeatureSettings,
    FeatureSpec,
    count_if,
    days_before,
    safe_ratio,
    spec_maker,
    supported_ratio,
)

log = logging.getLogger(__name__)

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


EVENT_KIND_COLUMNS = ("view", "search", "add_to_cart", "purchase")


def event_features(events: DataFrame, settings: FeatureSettings) -> DataFrame:
    """Sessions, browsing counts and conversion per customer; one row per customer with a visible event."""
    columns = events.columns
    # One shuffle by customer serves the session window and both aggregation levels.
    visible = events.where(F.col("timestamp") < F.lit(settings.cutoff)).repartition("customer_id")
    by_session = _sessions(visible, settings)
    totals = _customer_totals(by_session, columns, settings)
    if "category" in columns:
        browsed = (
            visible.where(F.col("category").isNotNull())
            .groupBy("customer_id", "category")
            .agg(F.count(F.lit(1)).alias("_rows"))
            .groupBy("customer_id")
            .agg(F.count(F.lit(1)).cast("double").alias("_browsed"))
        )
        totals = totals.join(browsed, "customer_id", "left")
    output = _output_columns(columns, settings)
    names = [spec.name for spec in event_feature_specs(columns, settings)]
    return totals.select("customer_id", *[output[name].cast("double").alias(name) for name in names])


def _sessions(visible: DataFrame, settings: FeatureSettings) -> DataFrame:
    """One row per session (the source's session id, else a gap of session_gap_minutes starts one)."""
    columns = visible.columns
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
    per_session = [
        F.count(F.lit(1)).alias("_events"),
        F.min("timestamp").alias("_start"),
        F.max("timestamp").alias("_end"),
    ]
    if "event_type" in columns:
        sessions = sessions.withColumn("_kind", event_kind(settings.event_types))
        per_session += [count_if(F.col("_kind") == kind).alias(f"_{kind}") for kind in EVENT_KIND_COLUMNS]
    return sessions.groupBy("customer_id", "_session").agg(*per_session)


def _customer_totals(by_session: DataFrame, columns: list[str], settings: FeatureSettings) -> DataFrame:
    age = F.datediff(F.lit(settings.snapshot), F.to_date("_start"))
    per_customer = [
        F.count(F.lit(1)).cast("double").alias("sessions"),
        F.sum("_events").cast("double").alias("_events"),
        F.max("_end").alias("_last"),
        *[count_if(age < days).alias(f"sessions_{days}d") for days in settings.windows_days],
    ]
    if "event_type" in columns:
        per_customer += [F.sum(f"_{kind}").alias(f"_{kind}") for kind in EVENT_KIND_COLUMNS]
        with_cart = F.col("_add_to_cart") > 0
        per_customer += [
            count_if(with_cart).alias("_cart_sessions"),
            count_if(with_cart & (F.col("_purchase") == 0)).alias("_abandoned"),
        ]
    return by_session.groupBy("customer_id").agg(*per_customer)


def _output_columns(columns: list[str], settings: FeatureSettings) -> dict[str, Column]:
    support = settings.min_rate_support
    output: dict[str, Column] = {
        "sessions": F.col("sessions"),
        "events_per_session": safe_ratio(F.col("_events"), F.col("sessions")),
        "days_since_last_visit": days_before(F.col("_last"), settings.snapshot),
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
    return output
