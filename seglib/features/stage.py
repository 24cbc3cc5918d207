"""The `features` stage: validate the inputs, compute the snapshot's features, fit or reuse the
preprocessing pipeline, write `customer_features`, `feature_catalog` and the quarantine.

Every feature is computed as of a snapshot date from rows up to the end of that day only, so a
snapshot's features never see its future. Each table contributes the features its mapped columns
allow: transactions alone give RFM, timing and returns; a category, channel, discount, quantity or
order column adds its family; events and customers tables add browsing and demographics."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts, new_preprocessing_version
from seglib.contract.config import EventsInput, SeglibConfig
from seglib.contract.errors import InputDataError
from seglib.contract.tables import (
    FEATURE_CATALOG_TABLE,
    FEATURE_VECTOR_COLUMN,
    FEATURES_TABLE,
    PREPROCESSING_VERSION_COLUMN,
    PRETEXT_TABLE,
    QUARANTINE_TABLE,
    SNAPSHOT_COLUMN,
)
from seglib.features.assembly import build_features
from seglib.features.catalog import FeatureStatistics, all_null_features, catalog_frame, population_statistics
from seglib.features.lifetime_value import LifetimeValueFit, write_lifetime_value
from seglib.features.preprocessing import (
    FeatureMetadata,
    apply_preprocessing,
    current_preprocessing_version,
    load_feature_metadata,
    load_preprocessing,
    make_current,
    preprocessing_pipeline,
    save_preprocessing,
    vector_slot_names,
)
from seglib.features.pretext import PretextResult, write_pretext
from seglib.features.spec import FeatureSet, FeatureSettings
from seglib.features.transactions import top_values_of
from seglib.inputs.sources import InputFrames, InputTables, read_inputs
from seglib.inputs.validation import end_of_day, outside_window_rows, quarantined_rows
from seglib.platform.files import HadoopFiles
from seglib.platform.session import session_time_zone
from seglib.platform.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesResult:
    metadata: FeatureMetadata
    customers: int
    input_counts: dict[str, dict[str, int]]
    lifetime_value: LifetimeValueFit | None = None
    pretext: PretextResult | None = None

    @property
    def dimension(self) -> int:
        return self.metadata.dimension

    def format(self) -> str:
        lines = [f"wrote customer_features: {self.customers} customers, {self.dimension} model inputs"]
        for table, counts in self.input_counts.items():
            total = sum(counts.values())
            lines.append(
                f"  {table}: {total} rows = {counts['accepted']} accepted + {outside_window_rows(counts)} after "
                f"the snapshot + {quarantined_rows(counts)} quarantined"
            )
        if self.lifetime_value is not None:
            lines.append(f"wrote customer_value: lifetime value {self.lifetime_value.describe()}")
        if self.pretext is not None:
            lines.append(f"wrote {PRETEXT_TABLE}: {self.pretext.describe()}")
        return "\n".join(lines)


def _settings(
    config: SeglibConfig, categories: list[str], channels: list[str], time_of_day: bool
) -> FeatureSettings:
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
        time_of_day=time_of_day,
    )


def require_accepted_transactions(inputs: InputTables) -> None:
    """Stop (after the quarantine is written) when not one transaction was accepted."""
    for table, counts in inputs.counts.items():
        if table == inputs.transactions_label and counts.get("accepted", 0) == 0:
            reasons = ", ".join(
                f"{count} {reason}" for reason, count in counts.items() if reason != "accepted"
            )
            raise InputDataError(
                f"table {table} (transactions): not one of its {sum(counts.values())} rows was accepted "
                f"({reasons}); the quarantine table holds the rows with a defect, rows after the snapshot "
                "belong to later snapshots. Check the column mapping in input.transactions.columns, "
                "input.transactions.timestamp_format and features.snapshot_date"
            )


def features(
    spark: SparkSession,
    config: SeglibConfig,
    preprocessing_version: str | None = None,
    frames: InputFrames | None = None,
) -> FeaturesResult:
    """Validate the inputs, compute the snapshot's features, fit or reuse the pipeline, write the tables.

    The pipeline applied is `preprocessing_version` when given (seg score passes its model's), else the
    current one; `features.refit` (or the first run) fits a new version, which becomes current only once
    the snapshot's tables are written. Days are counted in `features.timezone` (the session's time zone
    is set to it for the stage and restored after). `frames` replaces configured sources by DataFrames.
    """
    with session_time_zone(spark, config.features.timezone):
        return _compute_features(spark, config, preprocessing_version, frames)


def _compute_features(
    spark: SparkSession, config: SeglibConfig, preprocessing_version: str | None, frames: InputFrames | None
) -> FeaturesResult:
    snapshot = config.features.snapshot_date
    inputs: InputTables = read_inputs(spark, config, frames)
    warehouse = Warehouse.from_config(spark, config)
    artifacts = Artifacts.from_config(config)
    # Rewritten on every run, also when empty, so that a rerun never keeps stale rejects.
    warehouse.write_snapshot(
        inputs.rejected.withColumn(SNAPSHOT_COLUMN, F.lit(snapshot)),
        config.storage.database,
        QUARANTINE_TABLE,
        snapshot,
    )
    require_accepted_transactions(inputs)
    version = preprocessing_version
    if version is None and not config.features.refit:
        version = current_preprocessing_version(spark, artifacts)
    saved = load_feature_metadata(spark, artifacts, version) if version is not None else None
    categories, channels = _vocabulary(inputs, config, saved)
    # A saved pipeline keeps its own choice, so later snapshots give the features it was fitted on.
    settings = _settings(
        config,
        categories,
        channels,
        saved.has_time_of_day if saved is not None else inputs.transactions_have_time_of_day,
    )
    raw, feature_set = build_features(inputs.transactions, inputs.customers, inputs.events, settings)
    if saved is not None:
        _require_same_features(saved, feature_set, list(config.features.windows_days))
    # One row per customer, read by the statistics, the pipeline fit and the write: staged once as
    # Parquet under cache_dir (a folder of this run's own) rather than cached in executor memory.
    staging = artifacts.features_staging(snapshot, uuid.uuid4().hex)
    try:
        raw.write.parquet(staging)
        customers, metadata, preprocessing = _scale_and_write(
            spark,
            config,
            warehouse,
            artifacts,
            spark.read.parquet(staging),
            feature_set,
            saved,
            (categories, channels),
        )
    finally:
        HadoopFiles(spark).delete(staging)
    value = write_lifetime_value(
        spark, warehouse, config, inputs.transactions, end_of_day(snapshot, config.features.timezone)
    )
    # Training material: a snapshot scored with an earlier model (preprocessing_version given) trains nothing.
    pretext = (
        write_pretext(spark, warehouse, config, inputs, settings, preprocessing)
        if preprocessing_version is None
        else None
    )
    return FeaturesResult(metadata, customers, inputs.counts, value, pretext)


def _vocabulary(
    inputs: InputTables, config: SeglibConfig, saved: FeatureMetadata | None
) -> tuple[list[str], list[str]]:
    """The categories and channels with a share feature: the saved pipeline's, or the snapshot's top ones."""
    if saved is not None:
        return saved.categories, saved.channels
    top = top_values_of(
        inputs.transactions,
        ["category", "channel"],
        config.features.snapshot_date,
        config.features.max_categories,
        config.features.timezone,
    )
    return top["category"], top["channel"]


def _require_same_features(saved: FeatureMetadata, feature_set: FeatureSet, windows_days: list[int]) -> None:
    """Known from the configuration and the mapped columns alone: refuse before computing anything."""
    names = [spec.name for spec in feature_set.specs]
    if names != saved.feature_names or windows_days != saved.windows_days:
        raise InputDataError(
            f"preprocessing version {saved.version} (fitted on snapshot {saved.fitted_snapshot}) expects the "
            f"features {saved.feature_names}, but the inputs and config now give {names}; run with "
            "features.refit=true (and retrain) to fit a new one"
        )


def _scale_and_write(
    spark: SparkSession,
    config: SeglibConfig,
    warehouse: Warehouse,
    artifacts: Artifacts,
    raw: DataFrame,
    feature_set: FeatureSet,
    saved: FeatureMetadata | None,
    vocabulary: tuple[list[str], list[str]],
) -> tuple[int, FeatureMetadata, PipelineModel]:
    """Apply the saved pipeline (or fit a new version), write the snapshot's tables, then move the pointer."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    customers, stats = population_statistics(raw, feature_set)
    if saved is not None:
        model, metadata = load_preprocessing(artifacts, saved.version), saved
        log.info("applying preprocessing version %s (fitted on %s)", saved.version, saved.fitted_snapshot)
    else:
        model, metadata = _fit_preprocessing(config, raw, feature_set, stats, vocabulary)
        save_preprocessing(spark, artifacts, model, metadata)
    scaled = apply_preprocessing(model, raw).select(
        *raw.columns, F.lit(metadata.version).alias(PREPROCESSING_VERSION_COLUMN), FEATURE_VECTOR_COLUMN
    )
    warehouse.write_snapshot(scaled, database, FEATURES_TABLE, snapshot)
    warehouse.write_snapshot(
        catalog_frame(spark, feature_set, stats, snapshot), database, FEATURE_CATALOG_TABLE, snapshot
    )
    if saved is None:
        # Last: a refit that fails before this point leaves the previous version current.
        make_current(spark, artifacts, metadata.version)
    return customers, metadata, model


def _fit_preprocessing(
    config: SeglibConfig,
    raw: DataFrame,
    feature_set: FeatureSet,
    stats: FeatureStatistics,
    vocabulary: tuple[list[str], list[str]],
) -> tuple[PipelineModel, FeatureMetadata]:
    """Fit a new preprocessing version (saved by the caller in a folder of its own)."""
    snapshot = config.features.snapshot_date
    version = new_preprocessing_version(snapshot)
    model = preprocessing_pipeline(
        feature_set, all_null_features(stats, feature_set), config.features.weighting
    ).fit(raw)
    metadata = FeatureMetadata(
        features=[asdict(spec) for spec in feature_set.specs],
        categories=vocabulary[0],
        channels=vocabulary[1],
        windows_days=list(config.features.windows_days),
        trend_window_days=config.features.trend_window_days,
        vector_slots=vector_slot_names(model, feature_set),
        fitted_snapshot=snapshot.isoformat(),
        version=version,
    )
    log.info(
        "fitted preprocessing version %s on snapshot %s (%d inputs)", version, snapshot, metadata.dimension
    )
    return model, metadata


def describe_features(spark: SparkSession, config: SeglibConfig) -> str:
    """The feature catalog of the configured snapshot as a text table (what `seg features --describe` prints)."""
    warehouse = Warehouse.from_config(spark, config)
    snapshot = config.features.snapshot_date
    rows = (
        warehouse.read_snapshot(config.storage.database, FEATURE_CATALOG_TABLE, snapshot)
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
