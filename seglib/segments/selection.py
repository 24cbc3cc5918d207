"""Choosing the number of segments: every k of the configured range scored on one sample by silhouette,
smallest segment, prediction strength (segments that reproduce on independent halves of the customers)
and, for a model of several members, member agreement (segments that reproduce on independent halves of
the model)."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from threadpoolctl import threadpool_limits

from seglib.contract.config import ClusterConfig, SelectionConfig
from seglib.numerics.local_kmeans import membership, squared_distances
from seglib.platform.host import usable_cores
from seglib.segments.algorithms import ALGORITHMS, PREDICTION, fit_clusters

log = logging.getLogger(__name__)


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


def label_contingency(left: np.ndarray, right: np.ndarray) -> dict[tuple[int, int], int]:
    """`contingency` of two label arrays on the driver: customers per (left, right) label pair."""
    pairs, counts = np.unique(np.stack([left, right], axis=1), axis=0, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(pairs, counts, strict=True)}


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
    member_agreement: float | None = None  # None: a one-member model, or an algorithm without a local fit


@dataclass(frozen=True)
class Selection:
    candidates: list[Candidate]
    k: int
    reason: str

    def format(self) -> str:
        lines = [
            f"{'k':>3}  {'silhouette':>10}  {'smallest':>8}  {'pred.strength':>13}  {'members':>7}  choice"
        ]
        for candidate in self.candidates:
            mark = "<- chosen" if candidate.k == self.k else candidate.note
            agreement = "-" if candidate.member_agreement is None else f"{candidate.member_agreement:.3f}"
            lines.append(
                f"{candidate.k:>3}  {candidate.silhouette:>10.3f}  {candidate.smallest_share:>8.1%}  "
                f"{candidate.prediction_strength:>13.3f}  {agreement:>7}  {mark}"
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
    """`_split_strength` on the driver-side sample for an algorithm with a `local_fit` (k-means): each half
    is clustered exactly as `fit_clusters` seeds and refines, without a Spark job per fit (the sample is bounded by
    `selection.sample_rows`, and dozens of fits per candidate would be mostly scheduling)."""
    seed = settings.seed + 1000 * k + split
    order = np.random.default_rng(seed).permutation(len(points))
    halves = [points[order[: len(points) // 2]], points[order[len(points) // 2 :]]]
    local_fit = ALGORITHMS[settings.algorithm].local_fit
    assert local_fit is not None
    centers = [
        local_fit(half, k, seed + 17 * index, restarts, settings.max_iter)
        for index, half in enumerate(halves)
    ]
    strengths = []
    for test, other in ((0, 1), (1, 0)):
        own = squared_distances(halves[test], centers[test]).argmin(axis=1)
        predicted = squared_distances(halves[test], centers[other]).argmin(axis=1)
        strengths.append(prediction_strength(label_contingency(own, predicted)))
    return sum(strengths) / len(strengths)


MEMBER_SPLITS = 3  # halvings averaged: one alone read 0.93 where two runs agreed at 0.63 (CDNOW k 7)


def member_halves(members: int) -> list[tuple[int, ...]]:
    """Up to MEMBER_SPLITS different first halves of the members (each holds member 0, so no halving is
    another's mirror image)."""
    return [(0, *rest) for rest in itertools.combinations(range(1, members), members // 2 - 1)][
        :MEMBER_SPLITS
    ]


def member_agreement(
    points: np.ndarray, members: int, settings: ClusterConfig, k: int, restarts: int
) -> float | None:
    """Mean adjusted Rand index between k-means on one half of the members' embeddings and on the other.

    A model of `members` members embeds every customer as its members' embeddings side by side, each from
    its own random start. Segments found by both halves alike are a property of the customers; segments
    on which they disagree are one draw of training among many, and a retrain would draw others. The
    members are halved MEMBER_SPLITS ways and the agreements averaged. Measured on the real-log bench (two
    runs of four members, one halving, per k): the halves' agreement and the runs' rose and fell together
    (CDNOW k 2-6: halves 0.77-0.97, runs 0.92-0.97; CDNOW k 7-8 and the Complete Journey k 4-8: halves
    mostly 0.36-0.69, runs 0.38-0.63), the halves reading lower than whole models, which average twice as
    many members; one halving once read 0.93 where the runs agreed at 0.63, hence several. None for one
    member."""
    if members < 2 or points.shape[1] % members:
        return None
    local_fit = ALGORITHMS[settings.algorithm].local_fit
    assert local_fit is not None
    columns = np.arange(points.shape[1]).reshape(members, -1)
    agreements = []
    for first in member_halves(members):
        second = [member for member in range(members) if member not in first]
        labels = []
        for half in (points[:, columns[list(first)].ravel()], points[:, columns[second].ravel()]):
            centers = local_fit(half, k, settings.seed, restarts, settings.max_iter)
            labels.append(squared_distances(half, centers).argmin(axis=1))
        agreements.append(adjusted_rand_index(label_contingency(*labels)))
    return sum(agreements) / len(agreements)


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


def _failed_bars(
    selection: SelectionConfig, smallest: float, strength: float, silhouette: float, agreement: float | None
) -> list[str]:
    """Why a candidate is rejected: one phrase per bar it fails (none: eligible)."""
    problems = []
    if smallest < selection.min_segment_share:
        problems.append(f"a segment holds {smallest:.1%} < {selection.min_segment_share:.1%}")
    if strength < selection.min_prediction_strength:
        problems.append(f"prediction strength {strength:.2f} < {selection.min_prediction_strength:.2f}")
    if silhouette < selection.min_silhouette:
        problems.append(f"silhouette {silhouette:.2f} < {selection.min_silhouette:.2f}")
    least_agreement = selection.min_member_agreement
    if agreement is not None and least_agreement is not None and agreement < least_agreement:
        problems.append(f"member agreement {agreement:.2f} < {least_agreement:.2f}")
    return problems


def _score_candidate(
    sample: DataFrame,
    points: np.ndarray | None,
    features_column: str,
    settings: ClusterConfig,
    k: int,
    restarts: int,
    members: int,
) -> Candidate:
    selection = settings.selection
    local_fit = ALGORITHMS[settings.algorithm].local_fit
    if points is not None and local_fit is not None:
        # The local fit on the driver-side sample, seeded and refined exactly as fit_clusters does (the
        # Spark fit of the sample would start from these centres and stop at once): no Spark job per
        # candidate. The segmentation itself is refined on every customer by Spark.
        centers = local_fit(points, k, settings.seed, restarts, settings.max_iter)
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
    agreement = (
        member_agreement(points, members, settings, k, restarts)
        if points is not None and local_fit is not None
        else None
    )
    problems = _failed_bars(selection, smallest, strength, silhouette, agreement)
    log.info(
        "k=%d: silhouette %.3f, smallest segment %.1f%%, prediction strength %.3f, member agreement %s",
        k,
        silhouette,
        100 * smallest,
        strength,
        "-" if agreement is None else f"{agreement:.3f}",
    )
    return Candidate(
        k, silhouette, smallest, strength, not problems, "; ".join(problems) or "eligible", agreement
    )


def select_k(
    vectors: DataFrame, features_column: str, settings: ClusterConfig, members: int = 1
) -> Selection:
    """Score every k of the range on one sample: silhouette, smallest segment, prediction strength and,
    for vectors that are `members` members' embeddings side by side, member agreement.

    The choice is the largest k that passes every bar: each segment holds at least `min_segment_share`
    of customers, the segments reproduce on independent halves of the sample (prediction strength at
    least `min_prediction_strength`), there is clustered structure (silhouette at least
    `min_silhouette`) and, where `min_member_agreement` is set, the segments do not depend on training's
    random start (member agreement at least that; k-means). Largest, because the bars reject a k that
    splits real groups, while a k that merges two real groups passes them and usually scores a *higher*
    silhouette (measured on the generated personas: silhouette alone chose 4 for 5 personas in two of
    four trainings). When no k passes, the highest silhouette of all, with the reason saying so.
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
    # k-means candidates and their halves are scored on the driver (_score_candidate); bounded sample.
    points = (
        np.array([row[0].toArray() for row in sample.collect()], dtype=np.float64)
        if ALGORITHMS[settings.algorithm].local_fit is not None
        else None
    )
    candidates = score_candidates(sample, points, features_column, settings, members)
    sample.unpersist()
    return choose_k(candidates, selection)


def score_candidates(
    sample: DataFrame,
    points: np.ndarray | None,
    features_column: str,
    settings: ClusterConfig,
    members: int,
    threads: int | None = None,
    one_blas_thread: bool = True,
) -> list[Candidate]:
    """Every k of the range scored side by side: on the driver-side `points` where the algorithm has a
    local fit, else by Spark fits of `sample`. `threads` and `one_blas_thread` are for bench/ to compare
    the former settings (four threads, BLAS's own threads on top); callers leave them.

    The candidates are independent. For k-means they are scored on the driver (numpy releases the GIL in
    its larger operations): one thread per core, each on one BLAS thread. With BLAS's own threads on top
    (one per core) every core ran several spinning threads; bench/selection_threads.py (2 cores, 8,000
    customers x 32 values, two runs): 1.8-1.9x faster on an idle host, 8-11x beside one busy process.
    For the other algorithms each candidate runs many tiny Spark jobs, and scoring four at once keeps
    the executors busy while the driver schedules."""
    on_driver = points is not None and ALGORITHMS[settings.algorithm].local_fit is not None
    if threads is None:
        threads = max(1, min(4, usable_cores())) if on_driver else 4
    limit = threadpool_limits(limits=1, user_api="blas") if on_driver and one_blas_thread else None
    with ThreadPoolExecutor(max_workers=threads) as pool, limit or contextlib.nullcontext():
        return list(
            pool.map(
                lambda k: _score_candidate(
                    sample, points, features_column, settings, k, settings.restarts, members
                ),
                range(settings.selection.k_min, settings.selection.k_max + 1),
            )
        )


def choose_k(candidates: list[Candidate], selection: SelectionConfig) -> Selection:
    """The largest eligible k among scored candidates; without one, the highest silhouette (see select_k).

    Stopping at the first k that fails instead (so that a k passing again after failures is not
    chosen) was measured on the real-log bench and dropped: CDNOW k 3/2 instead of 7/5, agreement
    between seeds 0.23 instead of 0.61, mean eta squared 0.213 instead of 0.253."""
    eligible = [candidate for candidate in candidates if candidate.eligible]
    requirements = [
        f"every segment >= {selection.min_segment_share:.1%} of customers",
        f"prediction strength >= {selection.min_prediction_strength:.2f}",
        f"silhouette >= {selection.min_silhouette:.2f}",
    ]
    if selection.min_member_agreement is not None and any(
        candidate.member_agreement is not None for candidate in candidates
    ):
        requirements.append(f"member agreement >= {selection.min_member_agreement:.2f}")
    bars = ", ".join(requirements[:-1]) + " and " + requirements[-1]
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
