"""All features, one row per customer: the families joined, every feature well defined (filled or
flagged), in model-input order."""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from seglib.contract.tables import (
    SNAPSHOT_COLUMN,
)
from seglib.features.customers import customer_attributes, customer_feature_specs
from seglib.features.events import event_feature_specs, event_features
from seglib.features.spec import UNKNOWN, FeatureSet, FeatureSettings, FeatureSpec
from seglib.features.transactions import transaction_feature_specs, transaction_features

log = logging.getLogger(__name__)


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
