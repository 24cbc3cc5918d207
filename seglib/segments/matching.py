"""Stable segment identities across retrains: Hungarian matching to the previous run's segments."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Matching:
    segment_of: dict[int, int]  # new cluster index -> segment id
    similarity: dict[int, float]  # segment id -> similarity with the previous segment it continues
    basis: str  # "members", "profiles" or "first run"

    @property
    def new_segments(self) -> list[int]:
        return sorted(set(self.segment_of.values()) - set(self.similarity))


def jaccard_matrix(overlap: Mapping[tuple[int, int], int]) -> dict[tuple[int, int], float]:
    """Jaccard of members for every (new cluster, old segment) pair of the contingency table, the
    sizes counted on the customers both snapshots hold (the table's margins)."""
    new_sizes: dict[int, int] = {}
    old_sizes: dict[int, int] = {}
    for (new, old), count in overlap.items():
        new_sizes[new] = new_sizes.get(new, 0) + count
        old_sizes[old] = old_sizes.get(old, 0) + count
    return {
        (new, old): count / (new_sizes[new] + old_sizes[old] - count)
        for (new, old), count in overlap.items()
        if new_sizes[new] + old_sizes[old] - count > 0
    }


def cosine_matrix(
    new_profiles: Mapping[int, Mapping[str, float]], old_profiles: Mapping[int, Mapping[str, float]]
) -> dict[tuple[int, int], float]:
    """Cosine similarity of standardized-difference vectors over the features both profiles have."""
    result = {}
    for new, new_vector in new_profiles.items():
        for old, old_vector in old_profiles.items():
            common = sorted(set(new_vector) & set(old_vector))
            dot = sum(new_vector[name] * old_vector[name] for name in common)
            norms = math.sqrt(sum(new_vector[name] ** 2 for name in common)) * math.sqrt(
                sum(old_vector[name] ** 2 for name in common)
            )
            result[(new, old)] = dot / norms if norms > 0 else 0.0
    return result


def match_segments(
    new_clusters: list[int],
    sizes: Mapping[int, int],
    similarity: Mapping[tuple[int, int], float],
    old_segments: list[int],
    min_similarity: float,
    next_id: int,
    basis: str,
) -> Matching:
    """One-to-one matching that maximises the total similarity (scipy's Hungarian solver); a pair below
    `min_similarity` is not a match. Unmatched clusters get fresh ids from `next_id`, largest first."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    segment_of: dict[int, int] = {}
    kept: dict[int, float] = {}
    if old_segments:
        scores = np.array([[similarity.get((new, old), 0.0) for old in old_segments] for new in new_clusters])
        rows, columns = linear_sum_assignment(scores, maximize=True)
        for row, column in zip(rows, columns, strict=True):
            if scores[row, column] >= min_similarity:
                segment_of[new_clusters[row]] = old_segments[column]
                kept[old_segments[column]] = float(scores[row, column])
    unmatched = sorted((c for c in new_clusters if c not in segment_of), key=lambda c: (-sizes.get(c, 0), c))
    for offset, cluster in enumerate(unmatched):
        segment_of[cluster] = next_id + offset
    return Matching(segment_of, kept, basis if old_segments else "first run")


def migration(current: DataFrame, previous: DataFrame) -> DataFrame:
    """Customers moving between segments: (from, to, customers); null from = new customer, null to =
    a customer of the previous snapshot that the current one does not hold."""
    return (
        previous.select("customer_id", F.col("segment_id").alias("from_segment_id"))
        .join(
            current.select("customer_id", F.col("segment_id").alias("to_segment_id")), "customer_id", "full"
        )
        .groupBy("from_segment_id", "to_segment_id")
        .agg(F.count(F.lit(1)).alias("customers"))
    )
