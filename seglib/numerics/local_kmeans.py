"""k-means on arrays in memory: greedy k-means++ seeding, Lloyd's iterations and the best of several
starts. Numpy only, so that Horovod ranks (IDEC's starting centres) import it without Spark or
scikit-learn; the driver-side k selection (seglib.segments.algorithms) uses the same code.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def squared_distances(
    points: np.ndarray, centers: np.ndarray, point_norms: np.ndarray | None = None
) -> np.ndarray:
    """n x k squared distances without an n x k x d intermediate (`point_norms`: the points' squared
    norms, when the caller reuses them over many calls)."""
    norms = (points**2).sum(axis=1) if point_norms is None else point_norms
    squared = norms[:, None] - 2 * points @ centers.T + (centers**2).sum(axis=1)[None, :]
    return np.maximum(squared, 0.0)


def kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii; 2 + log k candidates per step, as scikit-learn)."""
    trials = 2 + int(math.log(k))
    centers = [points[rng.integers(len(points))]]
    closest = squared_distances(points, centers[0][None, :])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: any point will do
            candidates = rng.integers(len(points), size=trials)
        else:
            candidates = rng.choice(len(points), size=trials, p=closest / total)
        with_candidate = np.minimum(closest[None, :], squared_distances(points, points[candidates]).T)
        best = int(with_candidate.sum(axis=1).argmin())
        centers.append(points[candidates[best]])
        closest = with_candidate[best]
    return np.array(centers)


def membership(labels: np.ndarray, clusters: int) -> np.ndarray:
    """The n x k one-hot matrix of cluster labels 0..k-1: per-cluster sums are one matrix product."""
    return (labels[:, None] == np.arange(clusters)[None, :]).astype(np.float64)


def local_kmeans(points: np.ndarray, centers: np.ndarray, max_iter: int) -> tuple[np.ndarray, float]:
    """Lloyd's iterations on a driver-side sample; the centres and their cost (sum of squared distances).

    Converged when no point changes centre (the centres then stay as they are). Thousands of these
    runs score the candidate k, so each iteration is a few whole-array operations: the centre sums
    are one matrix product with the n x k membership matrix rather than a pass per centre."""
    norms = (points**2).sum(axis=1)
    labels = None
    for _ in range(max_iter):
        assigned = squared_distances(points, centers, norms).argmin(axis=1)
        if labels is not None and np.array_equal(assigned, labels):
            break
        labels = assigned
        members = membership(labels, len(centers))
        sizes = members.sum(axis=0)
        # A centre that lost every point stays where it was.
        centers = np.where(
            sizes[:, None] > 0, (members.T @ points) / np.maximum(sizes, 1.0)[:, None], centers
        )
    return centers, float(squared_distances(points, centers, norms).min(axis=1).sum())


def best_local_kmeans(points: np.ndarray, k: int, seed: int, restarts: int, max_iter: int) -> np.ndarray:
    """The lowest-cost centres of `restarts` greedy k-means++ seedings, each followed by Lloyd's iterations."""
    best_centers, best_cost = None, math.inf
    for restart in range(restarts):
        seeds = kmeans_plus_plus(points, k, np.random.default_rng(seed + restart))
        centers, cost = local_kmeans(points, seeds, max_iter)
        log.debug("kmeans k=%d restart %d: sample cost %.4f", k, restart + 1, cost)
        if cost < best_cost:
            best_centers, best_cost = centers, cost
    assert best_centers is not None
    return best_centers
