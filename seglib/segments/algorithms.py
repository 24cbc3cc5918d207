"""Clustering algorithms (the `ALGORITHMS` registry), fitting, and per-customer assignment columns.

A new algorithm is one `ClusteringAlgorithm` entry here plus its name in
`seglib.contract.config.ClusteringAlgorithmName`.

Every customer is clustered and assigned by Spark jobs. The driver holds bounded samples only: the
k-means seeding and the k selection run on at most `SEEDING_ROWS` and `cluster.selection.sample_rows`
customers, as Spark's own k-means|| clusters its candidate centres on the driver.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.ml.clustering import (
    BisectingKMeans,
    BisectingKMeansModel,
    GaussianMixture,
    GaussianMixtureModel,
    KMeans,
    KMeansModel,
)
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.config import ClusterConfig
from seglib.numerics.local_kmeans import best_local_kmeans

log = logging.getLogger(__name__)

PREDICTION = "_cluster"
ClusteringModel = KMeansModel | BisectingKMeansModel | GaussianMixtureModel
LocalFit = Callable[[np.ndarray, int, int, int, int], np.ndarray]  # points, k, seed, restarts, max_iter


@dataclass(frozen=True)
class ClusteringAlgorithm:
    """One clustering algorithm, as the cluster stage, k selection and the scorer use it.

    `estimator` builds the Spark estimator from the common parameters (k, seed, maxIter, featuresCol,
    predictionCol); `model_class` loads a saved model; `cost` ranks fits (lower is better); `centers`
    gives the centres in cluster-index order. An algorithm with `driver_fit` is fitted by it instead of
    best-of-restarts Spark fits; one with `local_fit` has its k candidates scored on a driver-side
    sample (both bounded by sample sizes).
    """

    estimator: Callable[[dict[str, Any]], Any]
    model_class: Any
    cost: Callable[[Any], float]
    centers: Callable[[Any], list[list[float]]]
    driver_fit: Callable[[DataFrame, str, int, int, int, int], Any] | None = None
    local_fit: LocalFit | None = None


def training_cost(model: Any) -> float:
    return float(model.summary.trainingCost)


def negative_log_likelihood(model: Any) -> float:
    return -float(model.summary.logLikelihood)


def cluster_centers(model: Any) -> list[list[float]]:
    return [[float(x) for x in center] for center in model.clusterCenters()]


def component_means(model: Any) -> list[list[float]]:
    return [[float(x) for x in gaussian.mean.toArray()] for gaussian in model.gaussians]


def _gaussian_mixture(parameters: dict[str, Any]) -> GaussianMixture:
    return GaussianMixture(**parameters, probabilityCol="_probability")


SEEDING_ROWS = 20_000


def fit_clusters(
    vectors: DataFrame, features_column: str, settings: ClusterConfig, k: int, restarts: int | None = None
) -> ClusteringModel:
    """Best of several seeded fits: one start can settle in a poor local optimum."""
    restarts = restarts or settings.restarts
    algorithm = ALGORITHMS[settings.algorithm]
    if algorithm.driver_fit is not None:
        return algorithm.driver_fit(vectors, features_column, k, settings.seed, restarts, settings.max_iter)
    best: ClusteringModel | None = None
    for restart in range(restarts):
        parameters: dict[str, Any] = {
            "k": k,
            "seed": settings.seed + restart,
            "maxIter": settings.max_iter,
            "featuresCol": features_column,
            "predictionCol": PREDICTION,
        }
        model = algorithm.estimator(parameters).fit(vectors)
        log.debug("%s k=%d restart %d: %.4f", settings.algorithm, k, restart + 1, algorithm.cost(model))
        if best is None or algorithm.cost(model) < algorithm.cost(best):
            best = model
    assert best is not None
    return best


CONVERGENCE_DISTANCE = 1e-4  # Spark's k-means default: converged once no centre moves farther than this


def _fit_kmeans(
    vectors: DataFrame, features_column: str, k: int, seed: int, restarts: int, max_iter: int
) -> KMeansModel:
    """k-means started from the best of `restarts` greedy k-means++ seedings, refined on every row by Spark.

    Spark's own starts (k-means|| and random) settle in a poor local optimum most of the time on
    customer embeddings: on four trained embeddings of the 5 generated personas, k-means|| reached the
    best cost at k=5 in 2, 1, 10 and 3 of 10 seeds, so even the best of 10 fits often split one persona
    and merged two. As Spark's k-means|| does with its candidates, the seeding runs on the driver, on a
    sample of at most SEEDING_ROWS customers: greedy k-means++ and Lloyd's iterations per restart, the
    lowest-cost centres kept. Lloyd's iterations then run on every row as DataFrame aggregations (one
    Spark job per iteration, as Spark's k-means), and the result becomes a `pyspark.ml` model, which the
    cluster stage saves and the scorer loads. Only public DataFrame and `pyspark.ml` API: pyspark.ml's
    KMeans takes no initial centres, and the RDD-based one that does needs an RDD and a JVM gateway.
    """
    column = vectors.select(features_column)
    total = column.count()
    fraction = min(1.0, SEEDING_ROWS / max(total, 1))
    seeding = column if fraction >= 1.0 else column.sample(fraction=fraction, seed=seed)
    points = np.array([row[0].toArray() for row in seeding.collect()], dtype=np.float64)
    if len(points) < k:
        raise ValueError(f"cannot form {k} segments from {len(points)} customers")
    centers = best_local_kmeans(points, k, seed, restarts, max_iter)
    centers = _lloyd_iterations(column, features_column, centers, max_iter)
    model = _kmeans_model_with_centers(vectors.sparkSession, features_column, centers, seed)
    model.setFeaturesCol(features_column)
    model.setPredictionCol(PREDICTION)
    return model


def _nearest_center(values: Column, centers: np.ndarray) -> Column:
    """The index of the centre nearest to the array column `values` (the lowest index on a tie)."""
    candidates = []
    for index, center in enumerate(centers):
        center_values = F.array(*[F.lit(float(value)) for value in center])
        squared = F.aggregate(
            F.zip_with(values, center_values, lambda x, y: (x - y) * (x - y)), F.lit(0.0), lambda a, b: a + b
        )
        candidates.append(F.struct(squared.alias("distance"), F.lit(index).alias("index")))
    return F.least(*candidates).getField("index")


def _lloyd_iterations(
    column: DataFrame, features_column: str, centers: np.ndarray, max_iter: int
) -> np.ndarray:
    """Lloyd's iterations over every row of `column` from `centers`; a centre that loses every row stays."""
    from pyspark.ml.functions import vector_to_array

    dimensions = centers.shape[1]
    values = column.select(vector_to_array(F.col(features_column)).alias("_values"))
    for _ in range(max_iter):
        means = (
            values.groupBy(_nearest_center(F.col("_values"), centers).alias("_center"))
            .agg(*[F.avg(F.col("_values")[dimension]) for dimension in range(dimensions)])
            .collect()
        )
        updated = centers.copy()
        for row in means:
            updated[row[0]] = np.asarray(row[1:], dtype=np.float64)
        moved = float(np.sqrt(((updated - centers) ** 2).sum(axis=1)).max())
        centers = updated
        if moved <= CONVERGENCE_DISTANCE:
            break
    return centers


def _kmeans_model_with_centers(
    spark: SparkSession, features_column: str, centers: np.ndarray, seed: int
) -> KMeansModel:
    """A `pyspark.ml` KMeansModel whose centres are exactly `centers`, built with public API only.

    pyspark.ml cannot construct a KMeansModel from centres, but k-means with random starts on the k
    centres themselves takes all k of them as its start (k rows sampled without replacement), and one
    Lloyd step leaves every centre on its own point. The centres come back in the sample's order, which
    is fixed by the seed; the caller reads them from the model.
    """
    from pyspark.ml.linalg import Vectors

    rows = [(Vectors.dense([float(value) for value in center]),) for center in centers]
    frame = spark.createDataFrame(rows, [features_column]).coalesce(1)
    model = KMeans(k=len(centers), initMode="random", maxIter=1, seed=seed, featuresCol=features_column).fit(
        frame
    )
    built = np.array(model.clusterCenters(), dtype=np.float64)
    gaps = np.abs(built[:, None, :] - centers[None, :, :]).max(axis=2)
    if len(built) != len(centers) or gaps.min(axis=1).max() > 1e-12:
        raise ValueError(
            f"cannot form {len(centers)} segments: the customers' embeddings give only {len(built)} distinct centres"
        )
    return model


ALGORITHMS: dict[str, ClusteringAlgorithm] = {
    "kmeans": ClusteringAlgorithm(
        estimator=lambda parameters: KMeans(**parameters),
        model_class=KMeansModel,
        cost=training_cost,
        centers=cluster_centers,
        driver_fit=_fit_kmeans,
        local_fit=best_local_kmeans,
    ),
    "bisecting_kmeans": ClusteringAlgorithm(
        estimator=lambda parameters: BisectingKMeans(**parameters),
        model_class=BisectingKMeansModel,
        cost=training_cost,
        centers=cluster_centers,
    ),
    "gaussian_mixture": ClusteringAlgorithm(
        estimator=_gaussian_mixture,
        model_class=GaussianMixtureModel,
        cost=negative_log_likelihood,
        centers=component_means,
    ),
}


def centers_of(algorithm: str, model: ClusteringModel) -> list[list[float]]:
    """Centres in the model's cluster-index order (a mixture's component means)."""
    return ALGORITHMS[algorithm].centers(model)


def load_model(algorithm: str, uri: str) -> ClusteringModel:
    return ALGORITHMS[algorithm].model_class.load(uri)  # type: ignore[no-any-return]


def literal_map(mapping: Mapping[Any, Any]) -> Column:
    """A small driver-side dict as a Spark map literal, to look values up in a Column expression."""
    return F.create_map(*[F.lit(item) for pair in mapping.items() for item in pair])


def euclidean_distance(left: Column, right: Column) -> Column:
    """Distance between two equal-length numeric arrays, as a Column (no Python UDF)."""
    squares = F.zip_with(left, right, lambda a, b: (a - b) * (a - b))
    return F.sqrt(F.aggregate(squares, F.lit(0.0).cast("double"), lambda total, x: total + x))


def assignment_columns(
    embedding: Column, cluster: Column, centers: Mapping[int, list[float]], segment_of: Mapping[int, int]
) -> dict[str, Column]:
    """Per customer: its segment, the distance to that segment's centre, the second-nearest segment and
    the confidence margin 1 - d(own) / d(second) (near 0: on the border; negative only when a mixture
    put the customer with a farther centre)."""
    mapping = literal_map(segment_of)
    distances = F.array(
        *[
            F.struct(
                euclidean_distance(embedding, F.array(*[F.lit(float(x)) for x in center])).alias("distance"),
                F.lit(segment_of[index]).alias("segment_id"),
            )
            for index, center in sorted(centers.items())
        ]
    )
    segment = mapping[cluster].cast("int")
    own = F.filter(distances, lambda item: item["segment_id"] == segment)[0]["distance"]
    others = F.array_sort(F.filter(distances, lambda item: item["segment_id"] != segment))
    second = others[0]
    return {
        "model_segment_id": segment,
        "distance_to_centroid": own,
        "second_segment_id": second["segment_id"],
        "second_distance": second["distance"],
        "confidence_margin": F.when(second["distance"] > 0, 1 - own / second["distance"]).otherwise(
            F.lit(0.0)
        ),
    }


def novelty_threshold(errors: DataFrame, column: str, quantile: float, factor: float) -> float:
    value = errors.approxQuantile(column, [quantile], 0.0005)
    return factor * float(value[0]) if value else math.inf
