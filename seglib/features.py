"""Point-in-time customer features and the saved preprocessing pipeline that scales them.

Every feature is computed as of a snapshot date from rows up to the end of that day only, so a
snapshot's features never see its future. Feature definitions are small functions over DataFrames
and Columns; `build_features` joins them and `features` writes the `customer_features` table.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass

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
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglib import fs
from seglib.config import SeglibConfig, validate_identifier
from seglib.errors import InputDataError
from seglib.paths import join_uri, resolve_uri
from seglib.validation import (
    QUARANTINE_TABLE,
    ValidatedTable,
    customer_rules,
    event_rules,
    transaction_rules,
    validate_rows,
)
from seglib.warehouse import SNAPSHOT_COLUMN, Warehouse

log = logging.getLogger(__name__)

FEATURES_TABLE = "customer_features"
FEATURE_VECTOR_COLUMN = "features"
UNKNOWN_REGION = "unknown"

# Counts and amounts: zero for a customer without purchases or visits, and heavy-tailed, so the
# pipeline log-transforms them before scaling.
COUNTS_AND_AMOUNTS = (
    "frequency",
    "monetary",
    "avg_order_value",
    "sessions",
    "views",
    "searches",
    "carts",
    "purchase_events",
)
BASE_NUMERIC_FEATURES = (
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "tenure_days",
    "age",
    "sessions",
    "views",
    "searches",
    "carts",
    "purchase_events",
    "days_since_last_visit",
)

_NUMERIC_TYPES = (
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
)
_TIME_TYPES = (T.TimestampType, T.TimestampNTZType, T.DateType)

INPUT_CONTRACT: dict[str, dict[str, tuple[type, ...]]] = {
    "transactions": {
        "customer_id": (*_NUMERIC_TYPES, T.StringType),
        "transaction_id": (*_NUMERIC_TYPES, T.StringType),
        "transaction_ts": _TIME_TYPES,
        "amount": _NUMERIC_TYPES,
        "category": (T.StringType,),
    },
    "customers": {
        "customer_id": (*_NUMERIC_TYPES, T.StringType),
        "signup_date": _TIME_TYPES,
        "age": _NUMERIC_TYPES,
        "region": (T.StringType,),
    },
    "events": {
        "customer_id": (*_NUMERIC_TYPES, T.StringType),
        "session_id": (*_NUMERIC_TYPES, T.StringType),
        "event_ts": _TIME_TYPES,
        "event_type": (T.StringType,),
    },
}


def check_input_columns(df: DataFrame, role: str, table_name: str) -> None:
    """Fail with the table, the column and the fix when a required column is missing or mistyped."""
    fields = {field.name: field.dataType for field in df.schema.fields}
    for column, accepted in INPUT_CONTRACT[role].items():
        if column not in fields:
            raise InputDataError(
                f"table {table_name} ({role}) has no column {column!r}, which seglib requires; "
                f"its columns are {sorted(fields)}. Add or rename the column in the source table."
            )
        if not isinstance(fields[column], accepted):
            expected = ", ".join(sorted({kind.__name__.removesuffix("Type").lower() for kind in accepted}))
            raise InputDataError(
                f"table {table_name} ({role}) column {column!r} has type {fields[column].simpleString()}, "
                f"expected one of: {expected}. Cast it in the source table."
            )


def category_share_column(category: str) -> str:
    """`share_<category>`; a category that is not already a plain lower-case name gets a hash suffix,
    so that "Home & Garden" and "home_garden" can never collide."""
    slug = re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")
    if slug != category:
        slug = f"{slug}_{hashlib.sha1(category.encode('utf-8')).hexdigest()[:6]}".lstrip("_")
    return validate_identifier(f"share_{slug}"[:128], "category feature")


def end_of_snapshot(snapshot: dt.date) -> Column:
    """Rows strictly before midnight after the snapshot date belong to the snapshot."""
    return F.lit(dt.datetime.combine(snapshot + dt.timedelta(days=1), dt.time.min))


def days_between(earlier: Column, snapshot: dt.date) -> Column:
    return F.datediff(F.lit(snapshot), F.to_date(earlier)).cast("double")


def safe_ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def transaction_features(transactions: DataFrame, snapshot: dt.date, categories: list[str]) -> DataFrame:
    """Recency, frequency, monetary, average order value and the spend share of each category."""
    visible = transactions.where(F.col("transaction_ts") < end_of_snapshot(snapshot))
    category_spend = [
        F.sum(F.when(F.col("category") == category, F.col("amount")).otherwise(0.0)).alias(f"_spend_{index}")
        for index, category in enumerate(categories)
    ]
    totals = visible.groupBy("customer_id").agg(
        F.max("transaction_ts").alias("_last_purchase"),
        F.count(F.lit(1)).cast("double").alias("frequency"),
        F.sum(F.col("amount").cast("double")).alias("monetary"),
        *category_spend,
    )
    return totals.select(
        "customer_id",
        days_between(F.col("_last_purchase"), snapshot).alias("recency_days"),
        "frequency",
        "monetary",
        safe_ratio(F.col("monetary"), F.col("frequency")).alias("avg_order_value"),
        *[
            safe_ratio(F.col(f"_spend_{index}"), F.col("monetary")).alias(category_share_column(category))
            for index, category in enumerate(categories)
        ],
    )


def event_features(events: DataFrame, snapshot: dt.date) -> DataFrame:
    """Browsing counts per event type, sessions and days since the last visit."""
    visible = events.where(F.col("event_ts") < end_of_snapshot(snapshot))

    def count_of(event_type: str) -> Column:
        return F.sum(F.when(F.lower(F.col("event_type")) == event_type, 1).otherwise(0)).cast("double")

    return visible.groupBy("customer_id").agg(
        F.countDistinct("session_id").cast("double").alias("sessions"),
        count_of("view").alias("views"),
        count_of("search").alias("searches"),
        count_of("cart").alias("carts"),
        count_of("purchase").alias("purchase_events"),
        days_between(F.max("event_ts"), snapshot).alias("days_since_last_visit"),
    )


def customer_attributes(customers: DataFrame, snapshot: dt.date) -> DataFrame:
    """Age, tenure and region of customers who had signed up by the snapshot."""
    signed_up = customers.where(F.col("signup_date").isNull() | (F.to_date("signup_date") <= F.lit(snapshot)))
    return signed_up.select(
        "customer_id",
        F.col("age").cast("double").alias("age"),
        days_between(F.col("signup_date"), snapshot).alias("tenure_days"),
        F.coalesce(F.lower(F.trim("region")), F.lit(UNKNOWN_REGION)).alias("region"),
    )


def top_categories(transactions: DataFrame, snapshot: dt.date, limit: int) -> list[str]:
    """The most frequent categories up to the snapshot (a small aggregate, safe to collect)."""
    rows = (
        transactions.where(F.col("transaction_ts") < end_of_snapshot(snapshot))
        .where(F.col("category").isNotNull())
        .groupBy("category")
        .count()
        .orderBy(F.desc("count"), F.asc("category"))
        .limit(limit)
        .collect()
    )
    return [row["category"] for row in rows]


def build_features(
    customers: DataFrame,
    transactions: DataFrame,
    events: DataFrame,
    snapshot: dt.date,
    categories: list[str],
    recency_cap_days: float,
) -> DataFrame:
    """One row per customer known at the snapshot, with every raw (unscaled) feature defined."""
    purchases = transaction_features(transactions, snapshot, categories)
    browsing = event_features(events, snapshot)
    attributes = customer_attributes(customers, snapshot)
    population = attributes.select("customer_id").union(purchases.select("customer_id")).distinct()
    joined = (
        population.join(attributes, "customer_id", "left")
        .join(purchases, "customer_id", "left")
        .join(browsing, "customer_id", "left")
    )
    zero_filled = [*COUNTS_AND_AMOUNTS, *[category_share_column(category) for category in categories]]
    capped = ["recency_days", "days_since_last_visit"]
    return joined.select(
        F.col("customer_id"),
        F.lit(snapshot).alias(SNAPSHOT_COLUMN),
        *[F.coalesce(F.col(name), F.lit(0.0)).alias(name) for name in zero_filled],
        # Never bought or never visited reads as "as long ago as we look back".
        *[
            F.least(F.coalesce(F.col(name), F.lit(recency_cap_days)), F.lit(recency_cap_days)).alias(name)
            for name in capped
        ],
        F.col("tenure_days"),
        F.col("age"),
        F.coalesce(F.col("region"), F.lit(UNKNOWN_REGION)).alias("region"),
    )


@dataclass(frozen=True)
class FeatureMetadata:
    """What the preprocessing pipeline was fitted on; saved beside it and reused with it."""

    categories: list[str]
    numeric_features: list[str]
    vector_slots: list[str]
    fitted_snapshot: str

    @property
    def dimension(self) -> int:
        return len(self.vector_slots)


def numeric_feature_names(categories: list[str]) -> list[str]:
    return [*BASE_NUMERIC_FEATURES, *[category_share_column(category) for category in categories]]


def preprocessing_pipeline(numeric_features: list[str]) -> Pipeline:
    """log1p for heavy tails, median imputation, standard scaling; region one-hot appended as 0/1.

    The one-hot slots stay unscaled: standardising them would give a rare region a weight of several
    standard deviations and let a noise attribute dominate the embedding.
    """
    transformed = [
        f"log1p(`{name}`) AS `{name}__log`" for name in numeric_features if name in COUNTS_AND_AMOUNTS
    ]
    model_inputs = [f"{name}__log" if name in COUNTS_AND_AMOUNTS else name for name in numeric_features]
    imputed = [f"{name}__imputed" for name in model_inputs]
    return Pipeline(
        stages=[
            SQLTransformer(statement=f"SELECT {', '.join(['*', *transformed])} FROM __THIS__"),
            Imputer(inputCols=model_inputs, outputCols=imputed, strategy="median"),
            VectorAssembler(inputCols=imputed, outputCol="_numeric"),
            StandardScaler(inputCol="_numeric", outputCol="_numeric_scaled", withMean=True, withStd=True),
            StringIndexer(
                inputCol="region",
                outputCol="region__index",
                handleInvalid="keep",
                stringOrderType="alphabetAsc",
            ),
            # The indexer already maps unseen regions to its extra index, so the encoder never sees one.
            OneHotEncoder(inputCols=["region__index"], outputCols=["region__onehot"], dropLast=False),
            VectorAssembler(inputCols=["_numeric_scaled", "region__onehot"], outputCol="_scaled"),
        ]
    )


def vector_slot_names(model: PipelineModel, numeric_features: list[str]) -> list[str]:
    indexer = next(stage for stage in model.stages if hasattr(stage, "labels"))
    regions = [*indexer.labels, "__unseen__"]  # handleInvalid="keep" adds one slot for unseen values
    return [*numeric_features, *[f"region={region}" for region in regions]]


def apply_preprocessing(model: PipelineModel, raw: DataFrame) -> DataFrame:
    """Raw features in, raw features plus the scaled `features` array<float> out."""
    scaled = model.transform(raw).withColumn(
        FEATURE_VECTOR_COLUMN, vector_to_array(F.col("_scaled"), "float32")
    )
    return scaled.select(*raw.columns, FEATURE_VECTOR_COLUMN)


def preprocessing_uri(config: SeglibConfig) -> str:
    return join_uri(resolve_uri(config.storage.model_dir), "preprocessing")


def load_feature_metadata(spark: SparkSession, config: SeglibConfig) -> FeatureMetadata:
    uri = join_uri(preprocessing_uri(config), "metadata.json")
    if not fs.exists(spark, uri):
        raise InputDataError(f"no preprocessing metadata at {uri}; run `seg features` first")
    return FeatureMetadata(**json.loads(fs.read_text(spark, uri)))


@dataclass(frozen=True)
class InputTables:
    """The raw tables after row-level validation: accepted rows, and the rejected ones with reasons."""

    customers: DataFrame
    transactions: DataFrame
    events: DataFrame
    rejected: DataFrame
    counts: dict[str, dict[str, int]]


ROW_RULES = {"customers": customer_rules, "transactions": transaction_rules, "events": event_rules}


def read_inputs(spark: SparkSession, config: SeglibConfig) -> InputTables:
    """Read, check the columns of, and validate the rows of the three raw tables."""
    warehouse = Warehouse.from_config(spark, config)
    database = config.input.database
    validated: dict[str, ValidatedTable] = {}
    for role, rules in ROW_RULES.items():
        name = f"{database}.{getattr(config.input, role)}"
        df = warehouse.read(database, getattr(config.input, role))
        check_input_columns(df, role, name)
        validated[role] = validate_rows(df, name, rules())
    rejected = functools.reduce(DataFrame.unionByName, [table.rejected for table in validated.values()])
    return InputTables(
        customers=validated["customers"].accepted,
        transactions=validated["transactions"].accepted,
        events=validated["events"].accepted,
        rejected=rejected,
        counts={table.name: table.counts for table in validated.values()},
    )


def features(spark: SparkSession, config: SeglibConfig) -> FeatureMetadata:
    """Compute the snapshot's features, fit or reuse the preprocessing pipeline, write customer_features."""
    snapshot = config.features.snapshot_date
    inputs = read_inputs(spark, config)
    warehouse = Warehouse.from_config(spark, config)
    # Rewritten on every run, also when empty, so that a rerun never keeps stale rejects.
    warehouse.write_snapshot(
        inputs.rejected.withColumn(SNAPSHOT_COLUMN, F.lit(snapshot)), config.storage.database, QUARANTINE_TABLE,
        snapshot,
    )  # fmt: skip
    pipeline_uri = join_uri(preprocessing_uri(config), "pipeline")
    reuse = not config.features.refit and fs.exists(spark, pipeline_uri)
    if reuse:
        metadata = load_feature_metadata(spark, config)
        categories = metadata.categories
    else:
        categories = top_categories(inputs.transactions, snapshot, config.features.max_categories)
    raw = build_features(
        inputs.customers,
        inputs.transactions,
        inputs.events,
        snapshot,
        categories,
        recency_cap_days=float(config.features.recency_cap_days),
    ).cache()
    if raw.isEmpty():
        raise InputDataError(
            f"no customer has signed up or bought anything by snapshot {snapshot} in {config.input.database}; "
            "set features.snapshot_date inside the data's date range"
        )
    if reuse:
        model = PipelineModel.load(pipeline_uri)
        log.info("reusing preprocessing pipeline fitted on %s", metadata.fitted_snapshot)
    else:
        numeric = numeric_feature_names(categories)
        model = preprocessing_pipeline(numeric).fit(raw)
        model.write().overwrite().save(pipeline_uri)
        metadata = FeatureMetadata(
            categories, numeric, vector_slot_names(model, numeric), snapshot.isoformat()
        )
        fs.write_text(
            spark,
            join_uri(preprocessing_uri(config), "metadata.json"),
            json.dumps(asdict(metadata), indent=2),
        )
        log.info("fitted preprocessing pipeline on snapshot %s (%d inputs)", snapshot, metadata.dimension)
    warehouse.write_snapshot(
        apply_preprocessing(model, raw), config.storage.database, FEATURES_TABLE, snapshot
    )
    raw.unpersist()
    return metadata
