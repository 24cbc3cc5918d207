"""Spark MLlib KMeans on the embeddings; customer_segments and segment_profiles tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.functions import array_to_vector
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from seglib.config import ClusterConfig, SeglibConfig
from seglib.embed import EMBEDDING_COLUMN, EMBEDDINGS_TABLE
from seglib.errors import InputDataError
from seglib.features import FEATURES_TABLE, load_feature_metadata
from seglib.paths import join_uri
from seglib.train import models_root
from seglib.warehouse import SNAPSHOT_COLUMN, Warehouse

log = logging.getLogger(__name__)

SEGMENTS_TABLE = "customer_segments"
PROFILES_TABLE = "segment_profiles"


def euclidean_distance(left: Column, right: Column) -> Column:
    """Distance between two equal-length numeric arrays, as a Column (no Python UDF)."""
    squares = F.zip_with(left, right, lambda a, b: (a - b) * (a - b))
    return F.sqrt(F.aggregate(squares, F.lit(0.0).cast("double"), lambda total, x: total + x))


def relabel_by_size(assigned: DataFrame, prediction: str) -> dict[int, int]:
    """Map KMeans' arbitrary cluster ids to ids ordered by size (0 = largest), ties by id."""
    sizes = assigned.groupBy(prediction).count().collect()  # k rows
    ordered = sorted(sizes, key=lambda row: (-row["count"], row[prediction]))
    return {row[prediction]: new_id for new_id, row in enumerate(ordered)}


def segment_profiles(features: DataFrame, segments: DataFrame, feature_names: list[str]) -> DataFrame:
    """Per segment and feature: size, share, segment mean, population mean and lift (a long table)."""
    members = segments.select("customer_id", "segment_id").join(
        features.select("customer_id", *feature_names), "customer_id"
    )
    values = members.unpivot(
        ["customer_id", "segment_id"], list[str | Column](feature_names), "feature", "value"
    )
    segment_means = values.groupBy("segment_id", "feature").agg(F.avg("value").alias("segment_mean"))
    population_means = values.groupBy("feature").agg(F.avg("value").alias("population_mean"))
    sizes = (
        members.groupBy("segment_id")
        .agg(F.count(F.lit(1)).alias("segment_size"))
        .crossJoin(members.agg(F.count(F.lit(1)).alias("_population")))
        .withColumn("segment_share", F.col("segment_size") / F.col("_population"))
    )
    return (
        segment_means.join(population_means, "feature")
        .join(sizes, "segment_id")
        .select(
            F.col("segment_id").cast("int"),
            F.col("segment_size").cast("long"),
            "segment_share",
            "feature",
            "segment_mean",
            "population_mean",
            F.when(F.col("population_mean") != 0, F.col("segment_mean") / F.col("population_mean")).alias(
                "lift"
            ),
        )
    )


def fit_kmeans(vectors: DataFrame, features_column: str, settings: ClusterConfig) -> KMeansModel:
    """Best of several seeded fits: one k-means|| start can settle in a poor local minimum."""
    best: KMeansModel | None = None
    for restart in range(settings.restarts):
        model = KMeans(
            k=settings.k,
            seed=settings.seed + restart,
            maxIter=settings.max_iter,
            featuresCol=features_column,
            predictionCol="_cluster",
        ).fit(vectors)
        cost = model.summary.trainingCost
        log.info("kmeans restart %d: cost %.4f", restart + 1, cost)
        if best is None or cost < best.summary.trainingCost:
            best = model
    assert best is not None
    return best


@dataclass(frozen=True)
class SegmentSummary:
    segment_id: int
    size: int
    share: float
    highest: list[tuple[str, float]]  # features most above the population mean (lift > 1)
    lowest: list[tuple[str, float]]  # features most below it (lift < 1)


def summarize(profiles: DataFrame, top: int = 3) -> list[SegmentSummary]:
    """What sets each segment apart: the largest and smallest lifts (profiles are k x features rows)."""
    by_segment: dict[int, list[Row]] = {}
    for row in profiles.collect():
        by_segment.setdefault(row["segment_id"], []).append(row)
    summaries = []
    for segment_id, rows in sorted(by_segment.items()):
        lifts = sorted(
            ((row["feature"], row["lift"]) for row in rows if row["lift"] is not None), key=lambda x: x[1]
        )
        summaries.append(
            SegmentSummary(
                segment_id=segment_id,
                size=rows[0]["segment_size"],
                share=rows[0]["segment_share"],
                highest=[item for item in reversed(lifts[-top:]) if item[1] > 1],
                lowest=[item for item in lifts[:top] if item[1] < 1],
            )
        )
    return summaries


def format_summary(summaries: list[SegmentSummary]) -> str:
    def lifts(items: list[tuple[str, float]]) -> str:
        return ", ".join(f"{name} x{lift:.2f}" for name, lift in items) or "-"

    lines = [
        f"{'segment':>7}  {'customers':>9}  {'share':>6}  above average | below average (lift vs. all customers)"
    ]
    for summary in summaries:
        lines.append(
            f"{summary.segment_id:>7}  {summary.size:>9}  {summary.share:>6.1%}  "
            f"{lifts(summary.highest)} | {lifts(summary.lowest)}"
        )
    return "\n".join(lines)


def cluster(spark: SparkSession, config: SeglibConfig) -> list[SegmentSummary]:
    """Fit KMeans on the snapshot's embeddings and write segments and their profiles."""
    snapshot = config.features.snapshot_date
    database = config.storage.database
    warehouse = Warehouse.from_config(spark, config)
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    versions = [
        row["model_version"] for row in embeddings.select("model_version").distinct().limit(2).collect()
    ]
    if len(versions) != 1:
        raise InputDataError(
            f"{database}.{EMBEDDINGS_TABLE} holds embeddings of {len(versions)} models for snapshot {snapshot}; "
            "rerun `seg embed` so that one model embeds the whole snapshot"
        )
    version = versions[0]
    vectors = embeddings.select(
        "customer_id", EMBEDDING_COLUMN, array_to_vector(F.col(EMBEDDING_COLUMN)).alias("_vector")
    ).cache()
    model = fit_kmeans(vectors, "_vector", config.cluster)
    model.write().overwrite().save(join_uri(models_root(config), version, f"kmeans-{snapshot:%Y%m%d}"))
    assigned = model.transform(vectors)
    relabel = relabel_by_size(assigned, "_cluster")
    centers = spark.createDataFrame(
        [
            (relabel[index], [float(value) for value in center])
            for index, center in enumerate(model.clusterCenters())
        ],
        "segment_id int, _center array<double>",
    )
    mapping = F.create_map(*[F.lit(item) for pair in relabel.items() for item in pair])
    segments = (
        assigned.withColumn("segment_id", mapping[F.col("_cluster")].cast("int"))
        .join(F.broadcast(centers), "segment_id")
        .select(
            "customer_id",
            "segment_id",
            euclidean_distance(F.col(EMBEDDING_COLUMN), F.col("_center")).alias("distance_to_centroid"),
            F.lit(snapshot).alias(SNAPSHOT_COLUMN),
            F.lit(version).alias("model_version"),
        )
    )
    warehouse.write_snapshot(segments, database, SEGMENTS_TABLE, snapshot)
    segments = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot)
    features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot)
    feature_names = load_feature_metadata(spark, config).numeric_features
    profiles = segment_profiles(features, segments, feature_names).select(
        "*", F.lit(snapshot).alias(SNAPSHOT_COLUMN), F.lit(version).alias("model_version")
    )
    warehouse.write_snapshot(profiles, database, PROFILES_TABLE, snapshot)
    vectors.unpersist()
    summaries = summarize(warehouse.read_snapshot(database, PROFILES_TABLE, snapshot))
    log.info("clustered snapshot %s into %d segments (model %s)", snapshot, len(summaries), version)
    return summaries
