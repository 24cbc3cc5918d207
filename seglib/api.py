"""The Python API for notebooks: segment customers from DataFrames in a session seglib did not open.

    from seglib import Segmentation

    segmentation = Segmentation("conf/retail.yaml")   # or a SeglibConfig, or a dict of sections
    fitted = segmentation.fit(spark, transactions_df, customers_df, snapshot_date="2026-11-30")
    fitted.catalog.show()                              # names, descriptions, actions, sizes
    scored = segmentation.transform(spark, transactions_df, snapshot_date="2026-12-31")

The DataFrames stand in for `input.transactions/customers/events` (their column mappings apply; a
table not passed is left out). Every stage commits its tables to `storage` as `seg run` does (seglib's
own tables, under its ownership rules), and the result holds DataFrames over the snapshot's rows. The
session settings seglib's tables depend on (UTC, the timestamp parser policy) are set for each call and
restored after, so a notebook's own settings neither change seglib's results nor are changed by them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from seglib.contract.config import CustomersInput, EventsInput, SeglibConfig, config_from_mapping, load_config
from seglib.contract.tables import (
    EMBEDDINGS_TABLE,
    FEATURES_TABLE,
    PROFILES_TABLE,
    QUARANTINE_TABLE,
    SEGMENT_CATALOG_TABLE,
    SEGMENTS_TABLE,
)
from seglib.inputs.sources import InputFrames, TableRole
from seglib.pipeline import PipelineReport, run_pipeline
from seglib.platform.session import RESULT_SETTINGS, session_conf
from seglib.platform.warehouse import Warehouse
from seglib.serving.scoring import ScoreResult, score

ConfigSource = SeglibConfig | Mapping[str, Any] | str | Path | None


@dataclass(frozen=True)
class SegmentationResult:
    """One snapshot's outputs, as DataFrames over the tables seglib wrote."""

    snapshot_date: dt.date
    segments: DataFrame  # customer_segments: segment, name, distance, margin, novelty, lifetime value
    # segment_catalog and segment_profiles: of this snapshot after fit, of the applied segmentation after
    # transform (scoring assigns customers to the fitted segments; it writes no catalog of its own).
    catalog: DataFrame
    profiles: DataFrame
    embeddings: DataFrame
    features: DataFrame
    quarantine: DataFrame  # input rows with a defect, with the reason
    pipeline: PipelineReport | None = None  # fit: stage wall times and results
    scoring: ScoreResult | None = None  # transform: counts and drift


class Segmentation:
    """A segmentation built from a config: `fit` trains it on DataFrames, `transform` scores new ones."""

    def __init__(self, config: ConfigSource = None) -> None:
        if config is None or isinstance(config, (str, Path)):
            self.config = load_config(config)
        elif isinstance(config, SeglibConfig):
            self.config = config
        else:
            self.config = config_from_mapping(config)

    def fit(
        self,
        spark: SparkSession,
        transactions: DataFrame,
        customers: DataFrame | None = None,
        events: DataFrame | None = None,
        *,
        snapshot_date: dt.date | str | None = None,
    ) -> SegmentationResult:
        """Features, training, embeddings and clusters for the snapshot (`features.snapshot_date` unless
        given), plus the report when `run.stages` lists it."""
        frames = _frames(transactions, customers, events)
        config = self._config_for(frames, snapshot_date, fitting=True)
        with session_conf(spark, RESULT_SETTINGS):
            report = run_pipeline(spark, config, frames)
        return _result(spark, config, pipeline=report)

    def transform(
        self,
        spark: SparkSession,
        transactions: DataFrame,
        customers: DataFrame | None = None,
        events: DataFrame | None = None,
        *,
        snapshot_date: dt.date | str | None = None,
        segmentation_snapshot: dt.date | str | None = None,
    ) -> SegmentationResult:
        """Score the snapshot with the fitted segmentation (the latest one up to the snapshot unless
        `segmentation_snapshot` names one), as `seg score` does: customer_segments and drift."""
        frames = _frames(transactions, customers, events)
        config = self._config_for(frames, snapshot_date, fitting=False)
        if segmentation_snapshot is not None:
            scoring = config.score.model_copy(update={"segmentation_snapshot": _date(segmentation_snapshot)})
            config = config.model_copy(update={"score": scoring})
        with session_conf(spark, RESULT_SETTINGS):
            result = score(spark, config, frames)
        return _result(spark, config, scoring=result)

    def _config_for(
        self, frames: InputFrames, snapshot_date: dt.date | str | None, fitting: bool
    ) -> SeglibConfig:
        """The config of one call: the tables passed (the others left out), its snapshot and stages."""
        config = self.config
        inputs = config.input.model_copy(
            update={
                "customers": (config.input.customers or CustomersInput()) if "customers" in frames else None,
                "events": (config.input.events or EventsInput()) if "events" in frames else None,
            }
        )
        snapshot = _date(snapshot_date) if snapshot_date is not None else config.features.snapshot_date
        update: dict[str, Any] = {
            "input": inputs,
            "features": config.features.model_copy(update={"snapshot_date": snapshot}),
        }
        if fitting:
            stages = [stage for stage in config.run.stages if stage != "generate"]
            update["run"] = config.run.model_copy(update={"stages": stages})
        return config.model_copy(update=update)


def _frames(transactions: DataFrame, customers: DataFrame | None, events: DataFrame | None) -> InputFrames:
    given: dict[TableRole, DataFrame | None] = {
        "transactions": transactions,
        "customers": customers,
        "events": events,
    }
    for role, frame in given.items():
        if frame is not None and not isinstance(frame, DataFrame):
            raise TypeError(f"{role} must be a Spark DataFrame, not {type(frame).__name__}")
    return {role: frame for role, frame in given.items() if frame is not None}


def _date(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _result(
    spark: SparkSession,
    config: SeglibConfig,
    pipeline: PipelineReport | None = None,
    scoring: ScoreResult | None = None,
) -> SegmentationResult:
    warehouse = Warehouse.from_config(spark, config)
    snapshot, database = config.features.snapshot_date, config.storage.database
    # Scoring writes no catalog or profiles: those of the segmentation it applied describe its segments.
    segmentation = scoring.segmentation_snapshot if scoring is not None else snapshot
    return SegmentationResult(
        snapshot_date=snapshot,
        segments=warehouse.snapshot_rows(database, SEGMENTS_TABLE, snapshot),
        catalog=warehouse.snapshot_rows(database, SEGMENT_CATALOG_TABLE, segmentation),
        profiles=warehouse.snapshot_rows(database, PROFILES_TABLE, segmentation),
        embeddings=warehouse.snapshot_rows(database, EMBEDDINGS_TABLE, snapshot),
        features=warehouse.snapshot_rows(database, FEATURES_TABLE, snapshot),
        quarantine=warehouse.snapshot_rows(database, QUARANTINE_TABLE, snapshot),
        pipeline=pipeline,
        scoring=scoring,
    )
