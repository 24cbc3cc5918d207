"""`seg score`: segment a new snapshot with the saved preprocessing, encoder and segmentation, without
retraining; upsert into customer_segments; write a drift record.

The segmentation used is the latest run (segmentation_runs) at or before the scored snapshot, or the
one of `score.segmentation_snapshot`; never a later one. customer_segments is upserted with a Delta
MERGE keyed by customer and snapshot, so late data for a snapshot adds and updates customers and never
duplicates, and customers no longer in the snapshot's features leave it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import SeglibConfig
from seglib.contract.errors import ConfigError, InputDataError
from seglib.contract.tables import (
    DRIFT_TABLE,
    EMBEDDINGS_TABLE,
    FEATURES_TABLE,
    RUNS_TABLE,
    SEGMENTS_TABLE,
    SNAPSHOT_COLUMN,
)
from seglib.features.stage import features
from seglib.inputs.sources import InputFrames
from seglib.platform.warehouse import Warehouse, retry_concurrent_commits
from seglib.representation.embedding import embed
from seglib.representation.model_store import model_preprocessing_version
from seglib.segments.model_export import logged_segmentation
from seglib.segments.reference import bin_shares
from seglib.segments.state import (
    assign,
    clustering_vectors,
    load_state,
    run_columns,
    segment_counts,
    with_lifetime_value,
)
from seglib.serving.drift import DRIFT_SCHEMA, DriftReport, drift_rows, measure_drift

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    snapshot: dt.date
    segmentation_snapshot: dt.date
    model_version: str
    customers: int
    novel_customers: int
    drift: DriftReport

    def format(self) -> str:
        worst = sorted(self.drift.feature_psi.items(), key=lambda item: -item[1])[:3]
        lines = [
            f"scored {self.customers} customers of snapshot {self.snapshot} with the segmentation of "
            f"{self.segmentation_snapshot} (model {self.model_version}); {self.novel_customers} novel",
            f"drift: segment-share PSI {self.drift.segment_psi:.3f}, novel share {self.drift.novel_share:.2%} "
            f"(training {self.drift.reference_novel_share:.2%}), largest feature PSI "
            + ", ".join(f"{name} {value:.3f}" for name, value in worst),
        ]
        lines += [f"warning: {text}" for text in self.drift.warnings]
        return "\n".join(lines)


def segmentation_to_use(
    warehouse: Warehouse, database: str, snapshot: dt.date, chosen: dt.date | None
) -> tuple[dt.date, str]:
    """The segmentation run (snapshot, model version) that scores `snapshot`: the one of `chosen`
    (score.segmentation_snapshot), else the latest at or before the scored snapshot (never a later one:
    its model would have learnt from the future of the scored snapshot)."""
    if not warehouse.exists(database, RUNS_TABLE):
        raise InputDataError(
            f"{database}.{RUNS_TABLE} does not exist: no segmentation to score with; run `seg run` (or train, "
            "embed and cluster) on a training snapshot first"
        )
    runs = warehouse.read(database, RUNS_TABLE).select(SNAPSHOT_COLUMN, "model_version")
    if chosen is not None:
        candidates = runs.where(F.col(SNAPSHOT_COLUMN) == F.lit(chosen))
        missing = (
            f"{database}.{RUNS_TABLE} holds no segmentation of snapshot {chosen}; set score.segmentation_snapshot "
            "to a snapshot that `seg cluster` ran for, or leave it null for the latest at or before the scored one"
        )
    else:
        candidates = runs.where(F.col(SNAPSHOT_COLUMN) <= F.lit(snapshot))
        missing = (
            f"{database}.{RUNS_TABLE} holds no segmentation at or before snapshot {snapshot}; score a snapshot on "
            "or after a clustered one, or set score.segmentation_snapshot explicitly"
        )
    row = candidates.orderBy(F.col(SNAPSHOT_COLUMN).desc()).first()
    if row is None:
        raise InputDataError(missing)
    segmentation_snapshot, version = row[0], row[1]
    own = runs.where(F.col(SNAPSHOT_COLUMN) == F.lit(snapshot)).first()
    if own is not None and (segmentation_snapshot != snapshot or own[1] != version):
        raise InputDataError(
            f"snapshot {snapshot} has a segmentation of its own (`seg cluster`, model {own[1]}); scoring it with "
            f"the segmentation of {segmentation_snapshot} would leave its segment catalog and profiles describing "
            "other segments than customer_segments. Score another snapshot, or set score.segmentation_snapshot "
            f"to {snapshot}"
        )
    return segmentation_snapshot, version


def upsert_segments(warehouse: Warehouse, database: str, scored: DataFrame, snapshot: dt.date) -> None:
    """The snapshot's rows become exactly the scored customers: a Delta MERGE keyed by (customer_id,
    snapshot_date) updates and inserts them and deletes the snapshot's customers that this scoring no
    longer holds (features and embeddings of the snapshot were replaced too). Every clause is confined
    to the snapshot, so other snapshots (and jobs writing them) are never touched."""
    if warehouse.format != "delta" or not warehouse.exists(database, SEGMENTS_TABLE):
        warehouse.write_snapshot(scored, database, SEGMENTS_TABLE, snapshot)
        return
    warehouse.claim(database, SEGMENTS_TABLE)
    warehouse.add_missing_columns(database, SEGMENTS_TABLE, scored.schema)
    day = f"DATE'{snapshot.isoformat()}'"
    # SQL MERGE rather than DeltaTable.forName: the same statement for a path and for a three-level
    # catalog name (Delta's Python API parses two-level names only outside Databricks).
    view = f"_seglib_scored_{uuid.uuid4().hex}"
    scored.createOrReplaceTempView(view)
    statement = (
        f"MERGE INTO {warehouse.merge_target(database, SEGMENTS_TABLE)} AS target USING {view} AS scored "
        f"ON target.{SNAPSHOT_COLUMN} = {day} AND target.customer_id = scored.customer_id "
        f"AND target.{SNAPSHOT_COLUMN} = scored.{SNAPSHOT_COLUMN} "
        "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT * "
        f"WHEN NOT MATCHED BY SOURCE AND target.{SNAPSHOT_COLUMN} = {day} THEN DELETE"
    )

    def merge() -> None:
        warehouse.spark.sql(statement)

    try:
        retry_concurrent_commits(merge, f"merging scores into {database}.{SEGMENTS_TABLE}")
    finally:
        warehouse.spark.catalog.dropTempView(view)
    warehouse.register(database, SEGMENTS_TABLE)


def score(spark: SparkSession, config: SeglibConfig, frames: InputFrames | None = None) -> ScoreResult:
    """Segment `features.snapshot_date` with a saved segmentation, upsert customer_segments, record drift.
    `frames` replaces configured input sources by DataFrames (the Python API)."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    if config.features.refit:
        raise ConfigError(
            "seg score applies the saved preprocessing pipeline; unset features.refit (refitting needs a retrain)"
        )
    warehouse = Warehouse.from_config(spark, config)
    artifacts = Artifacts.from_config(config)
    chosen, logged_version = config.score.segmentation_snapshot, None
    if config.score.model_uri is not None:
        chosen, logged_version = logged_segmentation(config, config.score.model_uri)
    segmentation_snapshot, version = segmentation_to_use(warehouse, database, snapshot, chosen)
    if logged_version is not None and version != logged_version:
        raise InputDataError(
            f"score.model_uri {config.score.model_uri} was logged from model {logged_version}, but the "
            f"segmentation of {segmentation_snapshot} in {database} uses model {version}"
        )
    state, model = load_state(spark, artifacts, version, segmentation_snapshot)
    # The model's own preprocessing version, whatever a later refit made current.
    features(
        spark,
        config,
        preprocessing_version=model_preprocessing_version(spark, artifacts, version),
        frames=frames,
    )
    embed(spark, config, model_version=version)
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    scored = with_lifetime_value(
        warehouse,
        database,
        snapshot,
        assign(
            clustering_vectors(embeddings, state.space, f"{database}.{EMBEDDINGS_TABLE}"), model, state
        ).select("*", *run_columns(snapshot, version)),
    )
    upsert_segments(warehouse, database, scored, snapshot)
    current = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot).where(
        F.col("model_version") == F.lit(version)
    )
    counts = segment_counts(current)
    current_bins = bin_shares(
        warehouse.read_snapshot(database, FEATURES_TABLE, snapshot), state.feature_edges
    )
    report = measure_drift(state, counts, current_bins, config.score.drift)
    record = spark.createDataFrame(drift_rows(report, config.score.drift), DRIFT_SCHEMA).select(
        "*",
        F.lit(segmentation_snapshot).alias("segmentation_snapshot"),
        *run_columns(snapshot, version),
    )
    warehouse.write_snapshot(record, database, DRIFT_TABLE, snapshot)
    for text in report.warnings:
        log.warning("drift in snapshot %s: %s", snapshot, text)
    return ScoreResult(snapshot, segmentation_snapshot, version, counts.customers, counts.novel, report)
