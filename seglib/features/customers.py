"""Customer attributes as of the snapshot (age, tenure, categorical attributes)."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from seglib.features.spec import UNKNOWN, FeatureSpec, days_before, spec_maker

log = logging.getLogger(__name__)

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
    """Numeric (double after `seglib.inputs.sources.canonical_frame`) and categorical (string) `attr_` columns."""
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
