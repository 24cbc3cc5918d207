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
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.cluster import (
    NOVEL_SEGMENT_ID,
    RUNS_TABLE,
    SEGMENTS_TABLE,
    SegmentationState,
    assign,
    embedding_vectors,
    load_state,
    segment_counts,
)
from seglib.config import SeglibConfig
from seglib.drift import bin_shares, population_stability
from seglib.embed import EMBEDDINGS_TABLE, embed
from seglib.errors import ConfigError, InputDataError
from seglib.features import FEATURES_TABLE, features
from seglib.train import model_preprocessing_version
from seglib.warehouse import SNAPSHOT_COLUMN, Warehouse, retry_concurrent_commits

log = logging.getLogger(__name__)

DRIFT_TABLE = "segment_drift"
DRIFT_SCHEMA = (
    "metric string, name string, reference double, current double, value double, threshold double, "
    "warning boolean"
)


@dataclass
class DriftReport:
    feature_psi: dict[str, float]
    segment_psi: float
    novel_share: float
    reference_novel_share: float
    shares: dict[int, tuple[float, float]]  # segment -> (reference, current)
    warnings: list[str] = field(default_factory=list)

    @property
    def retrain_recommended(self) -> bool:
        return bool(self.warnings)


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


def segmentation_to_use(warehouse: Warehouse, config: SeglibConfig) -> tuple[dt.date, str]:
    """The segmentation run (snapshot, model version) that scores `features.snapshot_date`: the one of
    `score.segmentation_snapshot`, else the latest at or before the scored snapshot (never a later one:
    its model would have learnt from the future of the scored snapshot)."""
    database, snapshot = config.storage.database, config.features.snapshot_date
    if not warehouse.exists(database, RUNS_TABLE):
        raise InputDataError(
            f"{database}.{RUNS_TABLE} does not exist: no segmentation to score with; run `seg run` (or train, "
            "embed and cluster) on a training snapshot first"
        )
    runs = warehouse.read(database, RUNS_TABLE).select(SNAPSHOT_COLUMN, "model_version")
    chosen = config.score.segmentation_snapshot
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


def upsert_segments(warehouse: Warehouse, config: SeglibConfig, scored: DataFrame, snapshot: dt.date) -> None:
    """The snapshot's rows become exactly the scored customers: a Delta MERGE keyed by (customer_id,
    snapshot_date) updates and inserts them and deletes the snapshot's customers that this scoring no
    longer holds (features and embeddings of the snapshot were replaced too). Every clause is confined
    to the snapshot, so other snapshots (and jobs writing them) are never touched."""
    database = config.storage.database
    if warehouse.format != "delta" or not warehouse.exists(database, SEGMENTS_TABLE):
        warehouse.write_snapshot(scored, database, SEGMENTS_TABLE, snapshot)
        return
    from delta.tables import DeltaTable

    warehouse.claim(database, SEGMENTS_TABLE)
    day = f"DATE'{snapshot.isoformat()}'"

    def merge() -> None:
        target = DeltaTable.forPath(warehouse.spark, warehouse.location(database, SEGMENTS_TABLE))
        (
            target.alias("target")
            .merge(
                scored.alias("scored"),
                f"target.{SNAPSHOT_COLUMN} = {day} AND target.customer_id = scored.customer_id "
                f"AND target.{SNAPSHOT_COLUMN} = scored.{SNAPSHOT_COLUMN}",
            )
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .whenNotMatchedBySourceDelete(condition=f"target.{SNAPSHOT_COLUMN} = {day}")
            .execute()
        )

    retry_concurrent_commits(merge, f"merging scores into {database}.{SEGMENTS_TABLE}")
    warehouse.register(database, SEGMENTS_TABLE)


def measure_drift(
    state: SegmentationState, counts: dict[int, int], current_features: DataFrame, config: SeglibConfig
) -> DriftReport:
    """`counts`: the scored customers per segment id (segment_counts)."""
    settings = config.score.drift
    total = sum(counts.values())
    current_shares = {segment: count / max(total, 1) for segment, count in counts.items()}
    reference_shares = state.segment_shares
    segments = sorted(set(reference_shares) | set(current_shares))
    segment_psi = population_stability(reference_shares, current_shares)
    current_bins = bin_shares(current_features, state.feature_edges)
    feature_psi = {
        name: population_stability(state.feature_shares[name], current_bins[name])
        for name in sorted(state.feature_edges)
    }
    novel_share = current_shares.get(NOVEL_SEGMENT_ID, 0.0)
    report = DriftReport(
        feature_psi=feature_psi,
        segment_psi=segment_psi,
        novel_share=novel_share,
        reference_novel_share=reference_shares.get(NOVEL_SEGMENT_ID, 0.0),
        shares={s: (reference_shares.get(s, 0.0), current_shares.get(s, 0.0)) for s in segments},
    )
    drifted = {name: psi for name, psi in feature_psi.items() if psi > settings.feature_psi_warning}
    if drifted:
        listed = ", ".join(
            f"{name} {psi:.2f}" for name, psi in sorted(drifted.items(), key=lambda x: -x[1])[:5]
        )
        report.warnings.append(
            f"{len(drifted)} features drifted beyond PSI {settings.feature_psi_warning} ({listed}); retraining "
            "is recommended"
        )
    if segment_psi > settings.segment_psi_warning:
        report.warnings.append(
            f"segment shares moved (PSI {segment_psi:.2f} > {settings.segment_psi_warning}); retraining is recommended"
        )
    if novel_share > settings.novel_share_warning:
        report.warnings.append(
            f"{novel_share:.1%} of customers are novel (> {settings.novel_share_warning:.1%}); retraining is recommended"
        )
    return report


def drift_rows(report: DriftReport, config: SeglibConfig) -> list[tuple[object, ...]]:
    settings = config.score.drift
    rows: list[tuple[object, ...]] = [
        (
            "feature_psi",
            name,
            None,
            None,
            psi,
            settings.feature_psi_warning,
            psi > settings.feature_psi_warning,
        )
        for name, psi in report.feature_psi.items()
    ]
    rows += [
        ("segment_share", str(segment), reference, current, current - reference, None, False)
        for segment, (reference, current) in report.shares.items()
    ]
    rows.append(
        (
            "segment_psi",
            "all segments",
            None,
            None,
            report.segment_psi,
            settings.segment_psi_warning,
            report.segment_psi > settings.segment_psi_warning,
        )
    )
    rows.append(
        (
            "novel_share",
            "novel customers",
            report.reference_novel_share,
            report.novel_share,
            report.novel_share,
            settings.novel_share_warning,
            report.novel_share > settings.novel_share_warning,
        )
    )
    return rows


def score(spark: SparkSession, config: SeglibConfig) -> ScoreResult:
    snapshot = config.features.snapshot_date
    database = config.storage.database
    if config.features.refit:
        raise ConfigError(
            "seg score applies the saved preprocessing pipeline; unset features.refit (refitting needs a retrain)"
        )
    warehouse = Warehouse.from_config(spark, config)
    segmentation_snapshot, version = segmentation_to_use(warehouse, config)
    state, model = load_state(spark, config, version, segmentation_snapshot)
    # The model's own preprocessing version, whatever a later refit made current.
    features(spark, config, preprocessing_version=model_preprocessing_version(spark, config, version))
    embed(spark, config, model_version=version)
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    scored = assign(embedding_vectors(embeddings), model, state).select(
        "*", F.lit(snapshot).alias(SNAPSHOT_COLUMN), F.lit(version).alias("model_version")
    )
    upsert_segments(warehouse, config, scored, snapshot)
    current = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot).where(
        F.col("model_version") == F.lit(version)
    )
    current_features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot)
    counts = segment_counts(current)
    report = measure_drift(state, counts, current_features, config)
    record = spark.createDataFrame(drift_rows(report, config), DRIFT_SCHEMA).select(
        "*",
        F.lit(segmentation_snapshot).alias("segmentation_snapshot"),
        F.lit(snapshot).alias(SNAPSHOT_COLUMN),
        F.lit(version).alias("model_version"),
    )
    warehouse.write_snapshot(record, database, DRIFT_TABLE, snapshot)
    for text in report.warnings:
        log.warning("drift in snapshot %s: %s", snapshot, text)
    customers, novel = sum(counts.values()), counts.get(NOVEL_SEGMENT_ID, 0)
    return ScoreResult(snapshot, segmentation_snapshot, version, customers, novel, report)
