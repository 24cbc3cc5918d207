"""The `report` stage: one self-contained HTML file per snapshot and the same charts as PNG files
beside it for slides, under report.directory (default: a `reports` folder beside model_dir)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import Row, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import SeglibConfig
from seglib.contract.errors import InputDataError
from seglib.contract.tables import (
    DRIFT_TABLE,
    EMBEDDING_COLUMN,
    EMBEDDINGS_TABLE,
    LIFETIME_VALUE_FIT_TABLE,
    PROFILES_TABLE,
    RUNS_TABLE,
    SEGMENT_CATALOG_TABLE,
    SEGMENTS_TABLE,
    SELECTION_TABLE,
    SPACE_COLUMNS,
)
from seglib.contract.uris import join_uri
from seglib.platform.files import FsspecFiles
from seglib.platform.warehouse import Warehouse
from seglib.reporting.charts import embedding_map, lift_heatmap, selection_chart, sizes_chart
from seglib.reporting.page import render_html

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportResult:
    location: str  # the report.html URI
    charts: list[str]  # PNG URIs

    def format(self) -> str:
        return f"report written to {self.location} ({len(self.charts)} charts beside it as PNG)"


def segmentation_of(warehouse: Warehouse, database: str, snapshot: dt.date) -> dt.date:
    """The snapshot whose segmentation run describes `snapshot`: itself when it was clustered, else
    the one `seg score` used for it."""
    if (
        warehouse.exists(database, RUNS_TABLE)
        and not warehouse.snapshot_rows(database, RUNS_TABLE, snapshot).isEmpty()
    ):
        return snapshot
    if warehouse.exists(database, DRIFT_TABLE):
        scored = (
            warehouse.snapshot_rows(database, DRIFT_TABLE, snapshot).select("segmentation_snapshot").first()
        )
        if scored is not None:
            return scored[0]  # type: ignore[no-any-return]
    raise InputDataError(
        f"snapshot {snapshot} was neither clustered nor scored in {database}; run `seg cluster` or "
        "`seg score` for it first"
    )


def report(spark: SparkSession, config: SeglibConfig) -> ReportResult:
    """Write report.html and the charts as PNG for `features.snapshot_date` (clustered or scored)."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    warehouse = Warehouse.from_config(spark, config)
    segmentation_snapshot = segmentation_of(warehouse, database, snapshot)
    run = warehouse.read_snapshot(database, RUNS_TABLE, segmentation_snapshot).first()
    assert run is not None
    catalog = (
        warehouse.read_snapshot(database, SEGMENT_CATALOG_TABLE, segmentation_snapshot)
        .orderBy("segment_id")
        .collect()
    )
    total = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot).count()
    charts = _charts(warehouse, config, segmentation_snapshot, run, catalog, total)
    drift = warehouse.optional_snapshot_rows(database, DRIFT_TABLE, snapshot)
    folder = Artifacts.from_config(config).report_folder(snapshot)
    files = FsspecFiles()
    written = []
    for name, (payload, _) in charts.items():
        uri = join_uri(folder, f"{name}.png")
        files.write_bytes(uri, payload)
        written.append(uri)
    location = join_uri(folder, "report.html")
    fit = warehouse.optional_snapshot_rows(database, LIFETIME_VALUE_FIT_TABLE, segmentation_snapshot)
    horizon = fit[0]["horizon_days"] if fit and fit[0]["r"] is not None else None
    page = render_html(snapshot, segmentation_snapshot, total, run, catalog, charts, drift, horizon)
    files.write_bytes(location, page.encode("utf-8"))
    log.info("report for snapshot %s: %s", snapshot, location)
    return ReportResult(location, written)


def map_space(run: Row) -> tuple[str, str]:
    """The embeddings-table column the segment map projects, the space the run's segments were found in
    (runs written before `clustering_space` existed clustered the latent embedding), and its caption."""
    space = run.asDict().get("clustering_space") or "embedding"
    place = "the model's reconstruction space" if space == "reconstruction" else "the embedding space"
    return SPACE_COLUMNS[space], f"Where the segments lie in {place}"


def _charts(
    warehouse: Warehouse,
    config: SeglibConfig,
    segmentation_snapshot: dt.date,
    run: Row,
    catalog: list[Row],
    total: int,
) -> dict[str, tuple[bytes, str]]:
    """Every chart with its caption; the embedding map from a sample of at most report.sample_rows."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    profiles = warehouse.read_snapshot(database, PROFILES_TABLE, segmentation_snapshot).collect()
    segments = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot)
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    fraction = min(1.0, config.report.sample_rows / max(total, 1))
    column, caption = map_space(run)
    points = (
        embeddings.select("customer_id", F.col(column).alias(EMBEDDING_COLUMN))
        .join(segments.select("customer_id", "segment_id", "is_novel"), "customer_id")
        .sample(fraction=fraction, seed=config.cluster.seed)
        .limit(config.report.sample_rows)
        .collect()
    )
    charts = {
        "segment_sizes": (sizes_chart(catalog), "Share of customers per segment"),
        "feature_lifts": (lift_heatmap(catalog, profiles), "The features that set the segments apart"),
        "embedding_map": (embedding_map(points, catalog), caption),
    }
    candidates = sorted(
        warehouse.optional_snapshot_rows(database, SELECTION_TABLE, segmentation_snapshot),
        key=lambda row: row["k"],
    )
    if candidates and run["k_chosen_by"] == "auto":
        charts["k_selection"] = (selection_chart(candidates), "Candidates for the number of segments")
    return charts
