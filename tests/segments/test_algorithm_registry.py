"""A clustering algorithm added through the registry alone, with no change to seglib's code: it is
fitted, described by its centres, saved with the segmentation state, reloaded and applied as the
scorer does, and takes part in the automatic choice of k."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pyspark.ml.clustering import KMeans, KMeansModel
from sklearn.metrics import adjusted_rand_score

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import ClusterConfig
from seglib.contract.errors import InputDataError
from seglib.segments.algorithms import (
    ALGORITHMS,
    ClusteringAlgorithm,
    centers_of,
    cluster_centers,
    fit_clusters,
    training_cost,
)
from seglib.segments.selection import select_k
from seglib.segments.state import SegmentationState, assign, clustering_vectors, load_state, save_state

TRUTH = [(0.0, 0.0), (8.0, 0.0), (0.0, 8.0)]


def planted_embeddings(spark):
    generator = random.Random(5)
    rows = [
        (f"c{index}", [value + generator.gauss(0, 0.6) for value in TRUTH[index % 3]], 0.0, index % 3)
        for index in range(240)
    ]
    frame = spark.createDataFrame(
        rows, "customer_id string, embedding array<double>, reconstruction_error double, planted int"
    )
    return clustering_vectors(frame, "embedding", "planted"), {row[0]: row[3] for row in rows}


def test_a_new_algorithm_is_one_registry_entry(spark, tmp_path, monkeypatch):
    # Spark's k-means from its random initialisation, a deliberately different estimator.
    monkeypatch.setitem(
        ALGORITHMS,
        "random_start_kmeans",
        ClusteringAlgorithm(
            estimator=lambda parameters: KMeans(initMode="random", **parameters),
            model_class=KMeansModel,
            cost=training_cost,
            centers=cluster_centers,
        ),
    )
    settings = ClusterConfig.model_validate({"k": 3, "restarts": 3, "seed": 2}).model_copy(
        update={"algorithm": "random_start_kmeans"}
    )
    vectors, planted = planted_embeddings(spark)
    model = fit_clusters(vectors, "_vector", settings, 3)
    centers = centers_of("random_start_kmeans", model)
    assert sorted(min(range(3), key=lambda i, c=c: sum((a - b) ** 2 for a, b in zip(TRUTH[i], c, strict=True)))
                  for c in centers) == [0, 1, 2]  # fmt: skip

    snapshot = dt.date(2025, 1, 31)
    artifacts = Artifacts(model_dir=(tmp_path / "models").as_uri(), cache_dir=(tmp_path / "cache").as_uri())
    state = SegmentationState(
        snapshot=snapshot, model_version="ae-test", algorithm="random_start_kmeans",
        segment_of={0: 10, 1: 11, 2: 12}, centers=dict(enumerate(centers)),
        names={10: "first", 11: "second", 12: "third"}, novelty_threshold=1.0,
        segment_shares={}, feature_edges={}, feature_shares={},
    )  # fmt: skip
    save_state(spark, artifacts, state, model)
    loaded_state, loaded_model = load_state(spark, artifacts, "ae-test", snapshot)
    assert isinstance(loaded_model, KMeansModel) and loaded_state == state
    assigned = {row["customer_id"]: row for row in assign(vectors, loaded_model, loaded_state).collect()}
    customers = sorted(assigned)
    assert (
        adjusted_rand_score(
            [planted[customer] for customer in customers],
            [assigned[customer]["segment_id"] for customer in customers],
        )
        == 1.0
    )
    assert {row["segment_name"] for row in assigned.values()} == {"first", "second", "third"}
    assert all(row["confidence_margin"] > 0.5 for row in assigned.values())

    # Without a local fit, every candidate k is scored by Spark fits of the new estimator.
    automatic = ClusterConfig.model_validate(
        {"k": "auto", "restarts": 1, "seed": 2, "selection": {"k_min": 2, "k_max": 4, "splits": 1}}
    ).model_copy(update={"algorithm": "random_start_kmeans"})
    selection = select_k(vectors, "_vector", automatic)
    assert [candidate.k for candidate in selection.candidates] == [2, 3, 4]
    assert selection.k == 3
    by_k = {candidate.k: candidate for candidate in selection.candidates}
    assert by_k[3].eligible and by_k[3].prediction_strength > 0.95
    assert not by_k[4].eligible  # splitting a planted group does not reproduce on the halves


def test_an_embeddings_table_from_before_the_reconstruction_column_asks_for_a_new_embed(spark):
    frame = spark.createDataFrame(
        [("c1", [0.0, 1.0], 0.0)], "customer_id string, embedding array<double>, reconstruction_error double"
    )
    with pytest.raises(
        InputDataError, match=r"seg\.customer_embeddings has no column 'reconstruction'.*seg embed"
    ):
        clustering_vectors(frame, "reconstruction", "seg.customer_embeddings")
    assert clustering_vectors(frame, "embedding", "seg.customer_embeddings").first()["_points"] == [0.0, 1.0]
