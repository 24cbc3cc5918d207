"""Spark MLlib clustering of the embeddings: the three algorithms, automatic k, per-customer assignment.

Everything here runs as Spark jobs; the driver only sees k x k contingency tables and k centres.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

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


def fit_clusters(
    vectors: DataFrame, features_column: str, settings: ClusterConfig, k: int, restarts: int | None = None
) -> ClusteringModel:
    """Best of several seeded fits: one start can settle in a poor local optimum."""
    best: ClusteringModel | None = None
    for restart in range(restarts or settings.restarts):
        estimator = _estimator(
            settings.algorithm, k, settings.seed + restart, settings.max_iter, features_column
        )
        model = estimator.fit(vectors)
        log.debug("%s k=%d restart %d: %.4f", settings.algorithm, k, restart + 1, _badness(model))
        if best is None or _badness(model) < _badness(best):
            best = model
    assert best is not None
    return best


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


@dataclass(frozen=True)
class Candidate:
    k: int
    silhouette: float
    smallest_share: float
    stability: float
    eligible: bool
    note: str


@dataclass(frozen=True)
class Selection:
    candidates: list[Candidate]
    k: int
    reason: str

    def format(self) -> str:
        lines = [f"{'k':>3}  {'silhouette':>10}  {'smallest':>8}  {'stability':>9}  choice"]
        for candidate in self.candidates:
            mark = "<- chosen" if candidate.k == self.k else candidate.note
            lines.append(
                f"{candidate.k:>3}  {candidate.silhouette:>10.3f}  {candidate.smallest_share:>8.1%}  "
                f"{candidate.stability:>9.3f}  {mark}"
            )
        lines.append(f"chose k={self.k}: {self.reason}")
        return "\n".join(lines)

    def as_rows(self) -> list[dict[str, Any]]:
        return [asdict(candidate) | {"chosen": candidate.k == self.k} for candidate in self.candidates]


def _score_candidate(
    sample: DataFrame, features_column: str, settings: ClusterConfig, k: int, restarts: int
) -> Candidate:
    selection = settings.selection
    model = fit_clusters(sample, features_column, settings, k, restarts)
    assigned = model.transform(sample).select(features_column, F.col(PREDICTION).alias("_reference")).cache()
    sizes = [row["count"] for row in assigned.groupBy("_reference").count().collect()]
    smallest = (min(sizes) if len(sizes) == k else 0) / max(sum(sizes), 1)
    evaluator = ClusteringEvaluator(
        featuresCol=features_column, predictionCol=PREDICTION, metricName="silhouette"
    )
    silhouette = float(evaluator.evaluate(assigned.withColumnRenamed("_reference", PREDICTION)))
    agreements = []
    for draw in range(selection.bootstrap):
        resample = sample.sample(withReplacement=True, fraction=1.0, seed=settings.seed + 1000 * k + draw)
        refit = fit_clusters(
            resample,
            features_column,
            settings.model_copy(update={"seed": settings.seed + 7 * draw + 1}),
            k,
            # Best of two: stability should measure resampling, not a single fit's unlucky optimum
            # (one Spark KMeans fit at k=5 lands in a worse optimum about 4 times in 10 here).
            2,
        )
        agreements.append(
            adjusted_rand_index(contingency(refit.transform(assigned), "_reference", PREDICTION))
        )
    assigned.unpersist()
    stability = sum(agreements) / len(agreements)
    problems = []
    if smallest < selection.min_segment_share:
        problems.append(f"a segment holds {smallest:.1%} < {selection.min_segment_share:.1%}")
    if stability < selection.min_stability:
        problems.append(f"stability {stability:.2f} < {selection.min_stability:.2f}")
    log.info(
        "k=%d: silhouette %.3f, smallest segment %.1f%%, stability %.3f",
        k,
        silhouette,
        100 * smallest,
        stability,
    )
    return Candidate(k, silhouette, smallest, stability, not problems, "; ".join(problems) or "eligible")


def select_k(vectors: DataFrame, features_column: str, settings: ClusterConfig) -> Selection:
    """Score every k of the range on one sample: silhouette, smallest segment, bootstrap stability.

    The choice is the highest silhouette among the candidates whose smallest segment and stability
    pass the configured bars (all candidates when none does, with the reason saying so).
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
    restarts = min(settings.restarts, 5)
    # The candidates are independent and each runs many tiny Spark jobs: scoring a few at once keeps
    # the executors busy while the driver schedules (Spark runs jobs from several threads).
    with ThreadPoolExecutor(max_workers=4) as pool:
        candidates = list(
            pool.map(
                lambda k: _score_candidate(sample, features_column, settings, k, restarts),
                range(selection.k_min, selection.k_max + 1),
            )
        )
    sample.unpersist()
    eligible = [candidate for candidate in candidates if candidate.eligible]
    finalists = eligible or candidates
    best = max(finalists, key=lambda candidate: (candidate.silhouette, -candidate.k))
    if eligible:
        reason = (
            f"highest silhouette ({best.silhouette:.3f}) among the {len(eligible)} of {len(candidates)} "
            f"candidates with every segment >= {selection.min_segment_share:.1%} of customers and bootstrap "
            f"stability >= {selection.min_stability:.2f}"
        )
    else:
        reason = (
            f"no candidate passed both bars (segment share >= {selection.min_segment_share:.1%}, stability >= "
            f"{selection.min_stability:.2f}); highest silhouette ({best.silhouette:.3f}) of all candidates. "
            "Consider a different k range or model"
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
