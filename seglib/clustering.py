"""Spark MLlib clustering of the embeddings: the three algorithms, automatic k, per-customer assignment.

Every customer is clustered and assigned by Spark jobs. The driver holds bounded samples only: the
k-means seeding and the k selection run on at most `SEEDING_ROWS` and `cluster.selection.sample_rows`
customers, as Spark's own k-means|| clusters its candidate centres on the driver.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
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
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from seglib.config import ClusterConfig, SelectionConfig
from seglib.kmeans import best_local_kmeans, membership, squared_distances

log = logging.getLogger(__name__)

PREDICTION = "_cluster"
ClusteringModel = KMeansModel | BisectingKMeansModel | GaussianMixtureModel
MODEL_CLASSES: dict[str, Any] = {
    "kmeans": KMeansModel,
    "bisecting_kmeans": BisectingKMeansModel,
    "gaussian_mixture": GaussianMixtureModel,
}


def _estimator(algorithm: str, k: int, seed: int, max_iter: int, features_column: str) -> Any:
    common: dict[str, Any] = {
        "k": k,
        "seed": seed,
        "maxIter": max_iter,
        "featuresCol": features_column,
        "predictionCol": PREDICTION,
    }
    if algorithm == "kmeans":
        return KMeans(**common)
    if algorithm == "bisecting_kmeans":
        return BisectingKMeans(**common)
    return GaussianMixture(**common, probabilityCol="_probability")


def _badness(model: ClusteringModel) -> float:
    """Lower is better: the within-cluster cost, or minus the log-likelihood of a mixture."""
    if isinstance(model, GaussianMixtureModel):
        return -float(model.summary.logLikelihood)
    return float(model.summary.trainingCost)


SEEDING_ROWS = 20_000


def fit_clusters(
    vectors: DataFrame, features_column: str, settings: ClusterConfig, k: int, restarts: int | None = None
) -> ClusteringModel:
    """Best of several seeded fits: one start can settle in a poor local optimum."""
    restarts = restarts or settings.restarts
    if settings.algorithm == "kmeans":
        return _fit_kmeans(vectors, features_column, k, settings.seed, restarts, settings.max_iter)
    best: ClusteringModel | None = None
    for restart in range(restarts):
        estimator = _estimator(
            settings.algorithm, k, settings.seed + restart, settings.max_iter, features_column
        )
        model = estimator.fit(vectors)
        log.debug("%s k=%d restart %d: %.4f", settings.algorithm, k, restart + 1, _badness(model))
        if best is None or _badness(model) < _badness(best):
            best = model
    assert best is not None
    return best


def _row_to_mllib_vector(row: Any) -> Any:
    from pyspark.mllib.linalg import Vectors

    return Vectors.fromML(row[0])


def _fit_kmeans(
    vectors: DataFrame, features_column: str, k: int, seed: int, restarts: int, max_iter: int
) -> KMeansModel:
    """Spark MLlib k-means started from the best of `restarts` greedy k-means++ seedings.

    Spark's own starts (k-means|| and random) settle in a poor local optimum most of the time on
    customer embeddings: on four trained embeddings of the 5 generated personas, k-means|| reached the
    best cost at k=5 in 2, 1, 10 and 3 of 10 seeds, so even the best of 10 fits often split one persona
    and merged two. As Spark's k-means|| does with its candidates, the seeding runs on the driver, on a
    sample of at most SEEDING_ROWS customers: greedy k-means++ and Lloyd's iterations per restart, the
    lowest-cost centres kept. Spark MLlib's k-means then runs from them on every row (the RDD-based API,
    the one that takes initial centres) and the result is wrapped as a `pyspark.ml` model, which the
    cluster stage saves and the scorer loads.
    """
    from pyspark.mllib.clustering import KMeans as MLlibKMeans
    from pyspark.mllib.clustering import KMeansModel as MLlibKMeansModel
    from pyspark.mllib.common import _py2java
    from pyspark.mllib.linalg import Vectors

    column = vectors.select(features_column)
    total = column.count()
    fraction = min(1.0, SEEDING_ROWS / max(total, 1))
    seeding = column if fraction >= 1.0 else column.sample(fraction=fraction, seed=seed)
    points = np.array([row[0].toArray() for row in seeding.collect()], dtype=np.float64)
    if len(points) < k:
        raise ValueError(f"cannot form {k} segments from {len(points)} customers")
    best_centers = best_local_kmeans(points, k, seed, restarts, max_iter)
    fitted = MLlibKMeans.train(
        column.rdd.map(_row_to_mllib_vector),
        k,
        maxIterations=max_iter,
        seed=seed,
        initialModel=MLlibKMeansModel([Vectors.dense(center) for center in best_centers]),
    )
    context = vectors.sparkSession.sparkContext
    java_centers = _py2java(
        context, [Vectors.dense(np.asarray(center, dtype=float)) for center in fitted.centers]
    )
    assert context._jvm is not None
    # pyspark.ml has no public way to build a KMeansModel from centres; the Scala constructor taking an
    # mllib model is private[ml], which Py4J reaches (public in bytecode). Pinned Spark 3.5; the
    # fit-save-reload unit test and the scoring e2e test would catch a change.
    java_model = context._jvm.org.apache.spark.ml.clustering.KMeansModel(
        KMeansModel._randomUID(),
        context._jvm.org.apache.spark.mllib.clustering.KMeansModel(java_centers),
    )
    model = KMeansModel(java_model)
    model.setFeaturesCol(features_column)
    model.setPredictionCol(PREDICTION)
    return model


def centers_of(model: ClusteringModel) -> list[list[float]]:
    """Centres in the model's cluster-index order (a mixture's component means)."""
    if isinstance(model, GaussianMixtureModel):
        return [[float(x) for x in gaussian.mean.toArray()] for gaussian in model.gaussians]
    return [[float(x) for x in center] for center in model.clusterCenters()]


def load_model(algorithm: str, uri: str) -> ClusteringModel:
    return MODEL_CLASSES[algorithm].load(uri)  # type: ignore[no-any-return]


def adjusted_rand_index(counts: Mapping[tuple[Any, Any], int]) -> float:
    """ARI from a contingency table {(label_a, label_b): customers}, so that it can come from a Spark
    groupBy instead of per-customer labels on the driver."""

    def pairs(n: float) -> float:
        return n * (n - 1) / 2

    total = sum(counts.values())
    if total < 2:
        return 1.0
    rows: dict[Any, int] = {}
    columns: dict[Any, int] = {}
    for (a, b), n in counts.items():
        rows[a] = rows.get(a, 0) + n
        columns[b] = columns.get(b, 0) + n
    index = sum(pairs(n) for n in counts.values())
    row_pairs = sum(pairs(n) for n in rows.values())
    column_pairs = sum(pairs(n) for n in columns.values())
    expected = row_pairs * column_pairs / pairs(total)
    maximum = (row_pairs + column_pairs) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


def contingency(frame: DataFrame, left: str, right: str) -> dict[tuple[Any, Any], int]:
    return {(row[0], row[1]): int(row[2]) for row in frame.groupBy(left, right).count().collect()}


def prediction_strength(counts: Mapping[tuple[Any, Any], int]) -> float:
    """Tibshirani and Walther's prediction strength from a contingency table {(own, predicted):
    customers} of a test half: for each cluster fitted on the test half, the share of its pairs of
    customers that the model fitted on the other half also puts together; the weakest cluster counts.
    Near 1 when k is at or below the number of real groups (merged groups stay together), it drops
    when k splits a real group, because the split falls differently in each half."""
    pairs_together: dict[Any, float] = {}
    sizes: dict[Any, int] = {}
    for (own, _), n in counts.items():
        pairs_together[own] = pairs_together.get(own, 0.0) + n * (n - 1)
        sizes[own] = sizes.get(own, 0) + n
    strengths = [
        pairs_together[own] / (size * (size - 1)) if size > 1 else 0.0 for own, size in sizes.items()
    ]
    return min(strengths) if strengths else 0.0


@dataclass(frozen=True)
class Candidate:
    k: int
    silhouette: float
    smallest_share: float
    prediction_strength: float
    eligible: bool
    note: str


@dataclass(frozen=True)
class Selection:
    candidates: list[Candidate]
    k: int
    reason: str

    def format(self) -> str:
        lines = [f"{'k':>3}  {'silhouette':>10}  {'smallest':>8}  {'pred.strength':>13}  choice"]
        for candidate in self.candidates:
            mark = "<- chosen" if candidate.k == self.k else candidate.note
            lines.append(
                f"{candidate.k:>3}  {candidate.silhouette:>10.3f}  {candidate.smallest_share:>8.1%}  "
                f"{candidate.prediction_strength:>13.3f}  {mark}"
            )
        lines.append(f"chose k={self.k}: {self.reason}")
        return "\n".join(lines)

    def as_rows(self) -> list[dict[str, Any]]:
        return [asdict(candidate) | {"chosen": candidate.k == self.k} for candidate in self.candidates]


def _split_strength(
    sample: DataFrame, features_column: str, settings: ClusterConfig, k: int, split: int, restarts: int
) -> float:
    """Prediction strength of k on one random split of the sample into halves, both ways round."""
    seed = settings.seed + 1000 * k + split
    halves = sample.withColumn("_half", (F.rand(seed) < 0.5).cast("int"))
    models = [
        fit_clusters(
            halves.where(F.col("_half") == half),
            features_column,
            settings.model_copy(update={"seed": seed + 17 * half}),
            k,
            restarts,
        )
        for half in (0, 1)
    ]
    strengths = []
    for test, other in ((0, 1), (1, 0)):
        own = (
            models[test].transform(halves.where(F.col("_half") == test)).withColumnRenamed(PREDICTION, "_own")
        )
        both = models[other].transform(own)
        strengths.append(prediction_strength(contingency(both, "_own", PREDICTION)))
    return sum(strengths) / len(strengths)


def _local_split_strength(
    points: np.ndarray, settings: ClusterConfig, k: int, split: int, restarts: int
) -> float:
    """`_split_strength` for k-means on the driver-side sample: each half is clustered exactly as
    `fit_clusters` seeds and refines, without a Spark job per fit (the sample is bounded by
    `selection.sample_rows`, and dozens of fits per candidate would be mostly scheduling)."""
    seed = settings.seed + 1000 * k + split
    order = np.random.default_rng(seed).permutation(len(points))
    halves = [points[order[: len(points) // 2]], points[order[len(points) // 2 :]]]
    centers = [
        best_local_kmeans(half, k, seed + 17 * index, restarts, settings.max_iter)
        for index, half in enumerate(halves)
    ]
    strengths = []
    for test, other in ((0, 1), (1, 0)):
        own = squared_distances(halves[test], centers[test]).argmin(axis=1)
        predicted = squared_distances(halves[test], centers[other]).argmin(axis=1)
        pairs, counts = np.unique(np.stack([own, predicted], axis=1), axis=0, return_counts=True)
        strengths.append(
            prediction_strength({(int(a), int(b)): int(n) for (a, b), n in zip(pairs, counts, strict=True)})
        )
    return sum(strengths) / len(strengths)


def squared_euclidean_silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """The silhouette Spark's ClusteringEvaluator reports (squared Euclidean distance), computed on a
    driver-side sample: each point's mean squared distance to a cluster follows from the cluster's
    size, sum and sum of squared norms, so the cost is n x k, not n x n. As in Spark, a point's own
    cluster excludes the point itself, and a point alone in its cluster scores 0."""
    clusters, members = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return 0.0
    one_hot = membership(members, len(clusters))
    sizes = one_hot.sum(axis=0)
    sums = one_hot.T @ points
    norms = (points**2).sum(axis=1)
    norm_sums = one_hot.T @ norms
    mean_distance = norms[:, None] + (norm_sums / sizes)[None, :] - 2 * (points @ sums.T) / sizes[None, :]
    own_size = sizes[members]
    rows = np.arange(len(points))
    alone = own_size == 1
    own = mean_distance[rows, members] * own_size / np.where(alone, 1.0, own_size - 1)
    mean_distance[rows, members] = np.inf
    nearest_other = mean_distance.min(axis=1)
    scores = np.where(
        own < nearest_other,
        1 - own / nearest_other,
        np.where(own > nearest_other, nearest_other / np.where(own > 0, own, 1.0) - 1, 0.0),
    )
    return float(np.where(alone, 0.0, scores).mean())


def _score_candidate(
    sample: DataFrame,
    points: np.ndarray | None,
    features_column: str,
    settings: ClusterConfig,
    k: int,
    restarts: int,
) -> Candidate:
    selection = settings.selection
    if points is not None:
        # k-means on the driver-side sample, seeded and refined exactly as fit_clusters does (the
        # Spark fit of the sample would start from these centres and stop at once): no Spark job per
        # candidate. The segmentation itself is fitted on every customer by Spark MLlib.
        centers = best_local_kmeans(points, k, settings.seed, restarts, settings.max_iter)
        labels = squared_distances(points, centers).argmin(axis=1)
        sizes = [int(size) for size in np.bincount(labels, minlength=k) if size > 0]
        silhouette = squared_euclidean_silhouette(points, labels)
    else:
        model = fit_clusters(sample, features_column, settings, k, restarts)
        assigned = model.transform(sample)
        sizes = [row["count"] for row in assigned.groupBy(PREDICTION).count().collect()]
        evaluator = ClusteringEvaluator(
            featuresCol=features_column, predictionCol=PREDICTION, metricName="silhouette"
        )
        silhouette = float(evaluator.evaluate(assigned))
    smallest = (min(sizes) if len(sizes) == k else 0) / max(sum(sizes), 1)
    strengths = [
        _local_split_strength(points, settings, k, split, restarts)
        if points is not None
        else _split_strength(sample, features_column, settings, k, split, restarts)
        for split in range(selection.splits)
    ]
    strength = sum(strengths) / len(strengths)
    problems = []
    if smallest < selection.min_segment_share:
        problems.append(f"a segment holds {smallest:.1%} < {selection.min_segment_share:.1%}")
    if strength < selection.min_prediction_strength:
        problems.append(f"prediction strength {strength:.2f} < {selection.min_prediction_strength:.2f}")
    if silhouette < selection.min_silhouette:
        problems.append(f"silhouette {silhouette:.2f} < {selection.min_silhouette:.2f}")
    log.info(
        "k=%d: silhouette %.3f, smallest segment %.1f%%, prediction strength %.3f",
        k,
        silhouette,
        100 * smallest,
        strength,
    )
    return Candidate(k, silhouette, smallest, strength, not problems, "; ".join(problems) or "eligible")


def select_k(vectors: DataFrame, features_column: str, settings: ClusterConfig) -> Selection:
    """Score every k of the range on one sample: silhouette, smallest segment, prediction strength.

    The choice is the largest k that passes every bar: each segment holds at least `min_segment_share`
    of customers, the segments reproduce on independent halves of the sample (prediction strength at
    least `min_prediction_strength`) and there is clustered structure (silhouette at least
    `min_silhouette`). Largest, because the bars reject a k that splits real groups, while a k that
    merges two real groups passes them and usually scores a *higher* silhouette (measured on the
    generated personas: silhouette alone chose 4 for 5 personas in two of four trainings). When no k
    passes, the highest silhouette of all, with the reason saying so.
    """
    selection: SelectionConfig = settings.selection
    total = vectors.count()
    fraction = min(1.0, selection.sample_rows / max(total, 1))
    sample = (vectors if fraction >= 1.0 else vectors.sample(fraction=fraction, seed=settings.seed)).select(
        features_column
    )
    # Dozens of small fits follow, each a Spark job per iteration: a few even partitions keep the
    # per-task overhead down (the table may arrive in many small files).
    sample = sample.repartition(vectors.sparkSession.sparkContext.defaultParallelism).cache()
    restarts = settings.restarts
    # k-means candidates and their halves are scored on the driver (_score_candidate); bounded sample.
    points = (
        np.array([row[0].toArray() for row in sample.collect()], dtype=np.float64)
        if settings.algorithm == "kmeans"
        else None
    )
    # The candidates are independent. For k-means they are scored on the driver (numpy releases the
    # GIL in its larger operations); for the other algorithms each runs many tiny Spark jobs, and scoring
    # a few at once keeps the executors busy while the driver schedules.
    with ThreadPoolExecutor(max_workers=4) as pool:
        candidates = list(
            pool.map(
                lambda k: _score_candidate(sample, points, features_column, settings, k, restarts),
                range(selection.k_min, selection.k_max + 1),
            )
        )
    sample.unpersist()
    eligible = [candidate for candidate in candidates if candidate.eligible]
    bars = (
        f"every segment >= {selection.min_segment_share:.1%} of customers, prediction strength >= "
        f"{selection.min_prediction_strength:.2f} and silhouette >= {selection.min_silhouette:.2f}"
    )
    if eligible:
        best = max(eligible, key=lambda candidate: candidate.k)
        reason = (
            f"largest k of the {len(eligible)} of {len(candidates)} candidates with {bars} "
            f"(silhouette {best.silhouette:.3f}, prediction strength {best.prediction_strength:.3f})"
        )
    else:
        best = max(candidates, key=lambda candidate: (candidate.silhouette, -candidate.k))
        reason = (
            f"no candidate passed every bar ({bars}); highest silhouette ({best.silhouette:.3f}) of all "
            "candidates. The embeddings may hold no clear groups: consider a different k range or model"
        )
    return Selection(candidates, best.k, reason)


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
