"""Units of the segmentation: statistics, k selection, matching, tree rules, drift."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from seglib.contract.config import ClusterConfig, SurrogateConfig
from seglib.numerics.local_kmeans import best_local_kmeans, kmeans_plus_plus, local_kmeans, squared_distances
from seglib.segments.algorithms import (
    ALGORITHMS,
    _kmeans_model_with_centers,
    _lloyd_iterations,
    assignment_columns,
    centers_of,
    euclidean_distance,
    fit_clusters,
    load_model,
)
from seglib.segments.explanations import leaf_conditions, surrogate_tree
from seglib.segments.matching import cosine_matrix, jaccard_matrix, match_segments, migration
from seglib.segments.profiles import segment_profiles
from seglib.segments.reference import bin_shares, decile_edges
from seglib.segments.selection import (
    adjusted_rand_index,
    prediction_strength,
    score_candidates,
    select_k,
    squared_euclidean_silhouette,
)
from seglib.serving.drift import population_stability


def test_euclidean_distance_of_arrays(spark):
    df = spark.createDataFrame(
        [([0.0, 3.0], [4.0, 0.0]), ([1.0, 1.0], [1.0, 1.0])], "a array<double>, b array<double>"
    )
    assert [row[0] for row in df.select(euclidean_distance(F.col("a"), F.col("b"))).collect()] == [5.0, 0.0]


def test_adjusted_rand_index_from_a_contingency_table_equals_sklearns():
    generator = random.Random(3)
    left = [generator.randrange(4) for _ in range(300)]
    right = [label if generator.random() < 0.7 else generator.randrange(5) for label in left]
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(left, right, strict=True):
        counts[pair] = counts.get(pair, 0) + 1
    assert adjusted_rand_index(counts) == pytest.approx(adjusted_rand_score(left, right), abs=1e-12)
    assert adjusted_rand_index({(0, 5): 10, (1, 6): 7}) == pytest.approx(1.0)


def test_assignment_gives_distance_second_nearest_segment_and_margin(spark):
    centers = {0: [0.0, 0.0], 1: [10.0, 0.0], 2: [0.0, 4.0]}
    segment_of = {0: 7, 1: 8, 2: 9}  # model index -> segment id
    customers = spark.createDataFrame(
        [("a", [1.0, 0.0], 0), ("b", [9.0, 0.0], 1), ("c", [0.0, 3.0], 2)],
        "customer_id string, embedding array<double>, _cluster int",
    )
    columns = assignment_columns(F.col("embedding"), F.col("_cluster"), centers, segment_of)
    rows = {
        row["customer_id"]: row
        for row in customers.select("customer_id", *[c.alias(n) for n, c in columns.items()]).collect()
    }
    assert rows["a"]["model_segment_id"] == 7 and rows["a"]["distance_to_centroid"] == pytest.approx(1.0)
    assert rows["a"]["second_segment_id"] == 9 and rows["a"]["second_distance"] == pytest.approx(
        math.sqrt(17)
    )
    assert rows["a"]["confidence_margin"] == pytest.approx(1 - 1 / math.sqrt(17))
    assert (rows["b"]["model_segment_id"], rows["b"]["second_segment_id"]) == (8, 7)
    assert rows["b"]["confidence_margin"] == pytest.approx(1 - 1 / 9)
    assert (rows["c"]["model_segment_id"], rows["c"]["second_segment_id"]) == (9, 7)
    assert rows["c"]["confidence_margin"] == pytest.approx(1 - 1 / 3)


def test_segment_profiles_hold_means_medians_lift_standardized_difference_and_significance(spark):
    rows = [(index, 0, 10.0 + index % 3, 1.0) for index in range(60)]
    rows += [(100 + index, 1, 30.0 + index % 3, 1.0 + (index % 2)) for index in range(30)]
    members = spark.createDataFrame(rows, "customer_id long, segment_id int, monetary double, visits double")
    result = {
        (row["segment_id"], row["feature"]): row
        for row in segment_profiles(members, ["monetary", "visits"]).collect()
    }
    low, high = result[(0, "monetary")], result[(1, "monetary")]
    values = [row[2] for row in rows]
    population_mean = sum(values) / len(values)
    population_sd = math.sqrt(sum((v - population_mean) ** 2 for v in values) / len(values))
    assert (low["segment_size"], low["segment_share"]) == (60, pytest.approx(2 / 3))
    assert low["segment_mean"] == pytest.approx(11.0) and high["segment_mean"] == pytest.approx(31.0)
    assert (
        low["segment_median"] == 11.0 and high["segment_median"] == 31.0 and high["population_median"] == 12.0
    )
    assert high["lift"] == pytest.approx(31.0 / population_mean)
    assert high["std_diff"] == pytest.approx((31.0 - population_mean) / population_sd)
    assert high["significant"] and high["t_statistic"] > 10 and high["rank"] == 1
    # visits: 1.5 vs 1.0 with 30 customers is a real but smaller difference; ranked second.
    assert result[(1, "visits")]["rank"] == 2 and result[(1, "visits")]["std_diff"] > 0


def test_profiles_have_no_lift_when_the_population_mean_is_zero(spark):
    members = spark.createDataFrame(
        [(1, 0, 0.0), (2, 1, 0.0)], "customer_id long, segment_id int, returns double"
    )
    result = segment_profiles(members, ["returns"]).collect()
    assert [(row["lift"], row["std_diff"], row["significant"]) for row in result] == [(None, 0.0, False)] * 2


def test_hungarian_matching_keeps_the_ids_of_the_same_groups_and_numbers_new_ones_after_the_last():
    # New clusters 0, 1, 2: 0 is the old segment 5, 1 the old segment 3, 2 overlaps nothing well.
    overlap = {(0, 5): 90, (0, 3): 10, (1, 3): 80, (1, 5): 5, (2, 3): 15, (2, 5): 5}
    new_sizes = {0: 100, 1: 85, 2: 20}
    similarity = jaccard_matrix(overlap)
    assert similarity[(0, 5)] == pytest.approx(90 / 110)
    matching = match_segments([0, 1, 2], new_sizes, similarity, [3, 5], 0.3, next_id=9, basis="members")
    assert matching.segment_of == {0: 5, 1: 3, 2: 9}
    assert matching.new_segments == [9] and set(matching.similarity) == {3, 5}
    first = match_segments([0, 1, 2], {0: 5, 1: 50, 2: 20}, {}, [], 0.3, 0, "first run")
    assert first.segment_of == {1: 0, 2: 1, 0: 2}  # by size, largest first


def test_profile_similarity_is_the_cosine_of_standardized_differences():
    result = cosine_matrix(
        {0: {"a": 1.0, "b": 0.0}}, {7: {"a": 2.0, "b": 0.0, "c": 5.0}, 8: {"a": 0.0, "b": 1.0}}
    )
    assert result == {(0, 7): pytest.approx(1.0), (0, 8): pytest.approx(0.0)}


def test_migration_counts_movers_new_and_departed_customers(spark):
    previous = spark.createDataFrame([("a", 0), ("b", 0), ("c", 1)], "customer_id string, segment_id int")
    current = spark.createDataFrame([("a", 0), ("b", 1), ("d", 1)], "customer_id string, segment_id int")
    counts = {(r[0], r[1]): r[2] for r in migration(current, previous).collect()}
    assert counts == {(0, 0): 1, (0, 1): 1, (1, None): 1, (None, 1): 1}


def test_prediction_strength_is_the_weakest_segments_share_of_pairs_kept_together():
    # Segment "a" (4 customers) is split 3 + 1 by the other half's model: 3*2 of its 4*3 ordered pairs
    # stay together. Segment "b" (2 customers) stays whole.
    counts = {("a", 0): 3, ("a", 1): 1, ("b", 1): 2}
    assert prediction_strength(counts) == pytest.approx(0.5)
    assert prediction_strength({("a", 0): 5, ("b", 1): 5}) == 1.0
    assert prediction_strength({("a", 0): 1, ("b", 0): 3}) == 0.0  # a one-customer segment has no pairs


def test_k_selection_finds_planted_clusters_that_silhouette_alone_would_merge(spark):
    generator = random.Random(5)
    # Two of the four groups lie close together: silhouette alone prefers to merge them.
    centers = [(0.0, 0.0, 0.0), (8.0, 0.0, 0.0), (0.0, 8.0, 0.0), (3.0, 0.0, 0.0)]
    rows = [(f"c{index}", [c + generator.gauss(0, 0.8) for c in centers[index % 4]]) for index in range(400)]
    vectors = spark.createDataFrame(rows, "customer_id string, embedding array<double>").select(
        "customer_id", array_to_vector("embedding").alias("v")
    )
    settings = ClusterConfig.model_validate(
        {"restarts": 3, "selection": {"k_min": 2, "k_max": 6, "splits": 1, "min_segment_share": 0.1}}
    )
    selection = select_k(vectors, "v", settings)
    assert selection.k == 4
    by_k = {candidate.k: candidate for candidate in selection.candidates}
    assert by_k[4].prediction_strength > 0.95 and by_k[4].smallest_share == pytest.approx(0.25, abs=0.01)
    # Merging planted groups reproduces (k=2, 3 pass); splitting one does not (5, 6 fail).
    assert by_k[2].eligible and by_k[3].eligible
    assert by_k[5].prediction_strength < 0.8 and by_k[6].prediction_strength < 0.8
    assert not by_k[5].eligible and not by_k[6].eligible
    assert by_k[3].silhouette > by_k[4].silhouette > by_k[5].silhouette
    assert "k=4" in selection.format() and "largest k of the 3 of 5 candidates" in selection.reason
    from pyspark.sql import Row

    from seglib.reporting.stage import selection_chart

    chart = selection_chart([Row(**row) for row in selection.as_rows()])
    assert chart[:8] == b"\x89PNG\r\n\x1a\n" and len(chart) > 10_000


def test_candidates_on_the_driver_fit_on_one_blas_thread_each_and_spark_candidates_are_left_alone(
    spark, monkeypatch
):
    """Side by side, each candidate's numpy fits run on one BLAS thread (several spinning BLAS threads
    per core slowed selection 8-11x beside a busy process); BLAS gets its threads back afterwards, and
    the scores are those of BLAS on its own threads."""
    from threadpoolctl import threadpool_info

    def blas_threads() -> set[int]:
        return {library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"}

    before = blas_threads()
    kmeans = ALGORITHMS["kmeans"]
    seen: list[set[int]] = []

    def recording_fit(*args, **kwargs):
        seen.append(blas_threads())
        return kmeans.local_fit(*args, **kwargs)

    generator = np.random.default_rng(3)
    # Three groups on a line, the first two nearer: k 2 merges those two in every half.
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    points = np.repeat(centres, 100, axis=0) + generator.normal(size=(300, 3))
    sample = spark.createDataFrame([(row.tolist(),) for row in points], "p array<double>").select(
        array_to_vector("p").alias("v")
    )
    settings = ClusterConfig.model_validate(
        {"restarts": 2, "selection": {"k_min": 2, "k_max": 4, "splits": 1}}
    )
    monkeypatch.setitem(ALGORITHMS, "kmeans", dataclasses.replace(kmeans, local_fit=recording_fit))
    product = score_candidates(sample, points, "v", settings, members=1)
    assert seen and all(threads == {1} for threads in seen)
    assert blas_threads() == before
    seen.clear()
    former = score_candidates(sample, points, "v", settings, members=1, threads=4, one_blas_thread=False)
    assert seen and all(threads == before for threads in seen)
    assert (
        [(c.k, c.eligible) for c in product]
        == [(c.k, c.eligible) for c in former]
        == [
            (2, True),
            (3, True),
            (4, False),
        ]
    )
    assert [c.silhouette for c in product] == pytest.approx([c.silhouette for c in former], abs=1e-9)


def test_driver_side_silhouette_equals_spark_clustering_evaluator(spark):
    """k selection scores its sample on the driver; the silhouette must be the one Spark reports, also
    with a point alone in its cluster (scored 0) and a cluster that overlaps another (negative scores)."""
    generator = random.Random(11)
    centers = [(0.0, 0.0), (4.0, 0.0), (4.5, 0.5)]
    rows = [(index % 3, [c + generator.gauss(0, 1.0) for c in centers[index % 3]]) for index in range(300)]
    rows.append((3, [30.0, 30.0]))  # alone in its cluster
    frame = spark.createDataFrame(rows, "label int, point array<double>").select(
        F.col("label").cast("double").alias("label"), array_to_vector("point").alias("v")
    )
    expected = ClusteringEvaluator(featuresCol="v", predictionCol="label").evaluate(frame)
    points = np.array([point for _, point in rows])
    labels = np.array([label for label, _ in rows])
    assert squared_euclidean_silhouette(points, labels) == pytest.approx(expected, abs=1e-9)
    assert 0 < expected < 0.9  # overlapping clusters: neither trivial nor perfect
    assert squared_euclidean_silhouette(points, np.zeros(len(points), dtype=int)) == 0.0


def test_surrogate_tree_explains_segments_with_readable_rules(spark):
    generator = random.Random(8)
    rows = []
    for index in range(600):
        spend, visits = generator.uniform(0, 100), generator.uniform(0, 10)
        segment = 0 if spend > 60 else (1 if visits > 5 else 2)
        rows.append((f"c{index}", segment, spend, visits, None if index % 50 == 0 else 1.0))
    members = spark.createDataFrame(
        rows, "customer_id string, segment_id int, spend double, visits double, noise double"
    )
    surrogate = surrogate_tree(
        members, ["spend", "visits", "noise"], {"noise": 1.0}, SurrogateConfig(max_depth=3), 1
    )
    assert surrogate.fidelity > 0.95
    top = {segment: rules[0] for segment, rules in surrogate.rules.items()}
    assert top[0].startswith("spend > 5") or top[0].startswith("spend > 6")
    assert "visits > " in top[1] and "spend <= " in top[1] and "visits <= " in top[2]
    assert all("precise" in rule and "covers" in rule for rules in surrogate.rules.values() for rule in rules)


def test_population_stability_is_zero_for_the_same_distribution_and_grows_with_shift(spark):
    generator = random.Random(2)
    reference = spark.createDataFrame(
        [(f"r{i}", generator.gauss(0, 1)) for i in range(2000)], "customer_id string, x double"
    )
    same = spark.createDataFrame(
        [(f"s{i}", generator.gauss(0, 1)) for i in range(2000)], "customer_id string, x double"
    )
    shifted = spark.createDataFrame(
        [(f"t{i}", generator.gauss(1, 1)) for i in range(2000)], "customer_id string, x double"
    )
    edges = decile_edges(reference, ["x"])
    assert len(edges["x"]) == 9
    base = bin_shares(reference, edges)["x"]
    assert sum(base.values()) == pytest.approx(1.0) and max(base.values()) < 0.12
    assert population_stability(base, bin_shares(same, edges)["x"]) < 0.05
    assert population_stability(base, bin_shares(shifted, edges)["x"]) > 0.5
    assert population_stability({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}) == 0.0


def test_kmeans_seeding_reaches_planted_centres_of_unequal_groups():
    import numpy as np

    rng = np.random.default_rng(3)
    truth = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 5.0]])
    sizes = [600, 300, 150, 80, 40]  # a small group is easy to miss with uniform random starts
    points = np.concatenate(
        [rng.normal(center, 0.8, size=(n, 2)) for center, n in zip(truth, sizes, strict=True)]
    )
    seeds = kmeans_plus_plus(points, 5, rng)
    assert len({tuple(seed) for seed in seeds}) == 5
    centers, cost = local_kmeans(points, seeds, 100)
    # A missed group leaves its planted centre 5 or more away from every fitted one.
    assert max(min(np.linalg.norm(center - expected) for center in centers) for expected in truth) < 1.0
    assert cost < 1.1 * 2 * 0.8**2 * len(points)  # close to the planted within-group variance


def test_best_local_kmeans_keeps_the_best_of_its_restarts():
    # Five groups of very unequal sizes. Greedy k-means++ rarely misses a group, so the noise is a draw
    # (seed 4) on which some single starts do: one centre then covers two groups.
    planted = np.array([[19.6, 4.7], [1.2, -10.3], [-15.5, -23.2], [-8.8, -2.8], [-8.6, 18.4]])
    rng = np.random.default_rng(4)
    points = np.concatenate(
        [
            center + 0.5 * rng.normal(size=(n, 2))
            for center, n in zip(planted, [290, 12, 18, 150, 250], strict=True)
        ]
    )

    def inertia(centers: np.ndarray) -> float:
        return float(squared_distances(points, centers).min(axis=1).sum())

    single = [inertia(best_local_kmeans(points, 5, seed, restarts=1, max_iter=50)) for seed in range(12)]
    best = [best_local_kmeans(points, 5, seed, restarts=10, max_iter=50) for seed in range(12)]
    assert max(single) > 2 * min(single)  # some single starts do settle in a poor optimum
    for centers in best:
        assert inertia(centers) <= min(single) * 1.001
        assert float(np.sqrt(squared_distances(planted, centers).min(axis=1)).max()) < 0.5


@pytest.mark.parametrize("algorithm", ["kmeans", "bisecting_kmeans", "gaussian_mixture"])
def test_each_algorithm_finds_planted_centres_and_reloads(spark, tmp_path, algorithm):
    generator = random.Random(11)
    truth = [(0.0, 0.0), (8.0, 0.0), (0.0, 8.0)]
    rows = [(f"c{i}", [c + generator.gauss(0, 0.7) for c in truth[i % 3]], i % 3) for i in range(300)]
    frame = spark.createDataFrame(
        rows, "customer_id string, embedding array<double>, planted int"
    ).withColumn("v", array_to_vector("embedding"))
    settings = ClusterConfig.model_validate({"algorithm": algorithm, "k": 3, "restarts": 1})
    model = fit_clusters(frame, "v", settings, 3)
    centers = centers_of(algorithm, model)
    for expected in truth:
        assert min(math.dist(expected, center) for center in centers) < 0.3
    model.write().overwrite().save(str(tmp_path / "model"))
    reloaded = load_model(algorithm, str(tmp_path / "model"))
    labels = reloaded.transform(frame).select("planted", "_cluster").collect()
    counts: dict[tuple[int, int], int] = {}
    for row in labels:
        counts[(row[0], row[1])] = counts.get((row[0], row[1]), 0) + 1
    assert adjusted_rand_index(counts) > 0.99


def test_spark_lloyd_iterations_end_where_local_lloyd_iterations_do(spark):
    """The refinement on every row (DataFrame aggregations) is Lloyd's algorithm: from the same start it
    reaches the centres the in-memory iterations reach, and the model built from them holds exactly them."""
    generator = np.random.default_rng(5)
    points = np.concatenate(
        [generator.normal(center, 1.2, size=(150, 3)) for center in ([0, 0, 0], [3, 0, 1], [0, 4, -1])]
    )
    start = points[[0, 1, 2]]  # three points of one group: Lloyd's iterations have a long way to go
    expected, _ = local_kmeans(points, start.copy(), 100)
    frame = spark.createDataFrame([(row.tolist(),) for row in points], "values array<double>").select(
        array_to_vector("values").alias("v")
    )
    refined = _lloyd_iterations(frame, "v", start.copy(), 100)
    assert np.abs(refined - expected).max() < 1e-3
    assert np.abs(refined - start).max() > 1.0
    model = _kmeans_model_with_centers(spark, "v", refined, seed=3)
    built = np.array(model.clusterCenters())
    assert sorted(map(tuple, built.round(9))) == sorted(map(tuple, refined.round(9)))
    nearest = squared_distances(points, built).argmin(axis=1)
    predicted = [row[0] for row in model.setPredictionCol("p").transform(frame).select("p").collect()]
    assert predicted == nearest.tolist()


def test_a_model_is_refused_when_the_centres_are_not_distinct(spark):
    with pytest.raises(ValueError, match="only 1 distinct centres"):
        _kmeans_model_with_centers(spark, "v", np.array([[1.0, 2.0], [1.0, 2.0]]), seed=1)


def test_leaf_paths_and_counts_from_the_public_api_are_the_trees_own(spark):
    """The rules come from `toDebugString` and the `leafCol` indices; the tree's own nodes (read here
    through its Java object, which seglib no longer touches) hold the same paths and label counts."""
    from pyspark.ml.classification import DecisionTreeClassifier
    from pyspark.ml.feature import VectorAssembler

    generator = random.Random(3)
    rows = [(generator.random() * 10, generator.gauss(0, 1), generator.randrange(4)) for _ in range(600)]
    frame = spark.createDataFrame(rows, "a double, b double, label int").withColumn(
        "_label", F.when(F.col("a") + F.col("b") > 6, 3.0).otherwise((F.col("label") % 3).cast("double"))
    )
    assembled = VectorAssembler(inputCols=["a", "b"], outputCol="raw").transform(frame)
    model = DecisionTreeClassifier(labelCol="_label", featuresCol="raw", maxDepth=4, seed=1).fit(assembled)

    def java_leaves(node, path):
        if node.getClass().getSimpleName() == "LeafNode":
            return [(path, [float(x) for x in node.impurityStats().stats()])]
        split = node.split()
        feature, threshold = ["a", "b"][split.featureIndex()], float(split.threshold())
        return java_leaves(node.leftChild(), [*path, (feature, True, threshold)]) + java_leaves(
            node.rightChild(), [*path, (feature, False, threshold)]
        )

    expected = java_leaves(model._java_obj.rootNode(), [])
    assert len(expected) >= 6
    counted = model.setLeafCol("leaf").transform(assembled).groupBy("leaf", "_label").count().collect()
    counts = [[0.0] * 4 for _ in expected]
    for row in counted:
        counts[int(row["leaf"])][int(row["_label"])] = float(row["count"])
    assert list(zip(leaf_conditions(model.toDebugString, ["a", "b"]), counts, strict=True)) == expected


def test_surrogate_tree_explains_more_than_a_hundred_segments(spark):
    """cluster.k goes up to 1000; inferred from the labels, Spark's tree stops at 100 classes."""
    rows = [(f"c{index}", index // 4, float(index // 4), float(index % 4)) for index in range(480)]
    members = spark.createDataFrame(rows, "customer_id string, segment_id int, position double, noise double")
    surrogate = surrogate_tree(
        members, ["position", "noise"], {}, SurrogateConfig(max_depth=8, min_instances_per_node=1), 1
    )
    # Every segment has its entry; the tree (32 bins per feature) gives leaves to about 30 of them.
    assert sorted(surrogate.rules) == list(range(120))
    described = [rules for rules in surrogate.rules.values() if rules]
    assert len(described) >= 20 and all("position" in rules[0] for rules in described)
    assert 0.0 <= surrogate.fidelity <= 1.0


def test_k_selection_rejects_a_k_on_which_the_models_members_disagree(spark):
    generator = random.Random(11)
    rows = []
    for index in range(600):
        group, side = index % 3, (index // 3) % 2
        # Both members place the three groups apart; only the first also splits each group in two.
        first = [10.0 * group + 3.0 * side, 0.0, 0.0]
        second = [0.0, 10.0 * group, 0.0]
        rows.append((f"c{index}", [value + generator.gauss(0, 0.5) for value in first + second]))
    vectors = spark.createDataFrame(rows, "customer_id string, embedding array<double>").select(
        "customer_id", array_to_vector("embedding").alias("v")
    )
    settings = ClusterConfig.model_validate(
        {"restarts": 3, "selection": {"k_min": 2, "k_max": 6, "splits": 1, "min_segment_share": 0.1}}
    )
    # Read as one model, the six groups are clear and reproducible.
    alone = select_k(vectors, "v", settings)
    assert alone.k == 6 and all(candidate.member_agreement is None for candidate in alone.candidates)
    # Read as two members, the second never sees the split: six segments are one member's draw.
    reported = select_k(vectors, "v", settings, members=2)
    assert reported.k == 6 and "member agreement" not in reported.reason  # reported, not a bar
    barred = settings.model_copy(
        update={"selection": settings.selection.model_copy(update={"min_member_agreement": 0.7})}
    )
    members = select_k(vectors, "v", barred, members=2)
    assert [c.member_agreement for c in members.candidates] == [
        c.member_agreement for c in reported.candidates
    ]
    by_k = {candidate.k: candidate for candidate in members.candidates}
    assert members.k == max(candidate.k for candidate in members.candidates if candidate.eligible) < 6
    assert by_k[3].member_agreement == pytest.approx(1.0)
    assert by_k[6].member_agreement is not None and by_k[6].member_agreement < 0.7
    assert not by_k[6].eligible and "member agreement" in by_k[6].note
    assert by_k[6].prediction_strength > 0.9  # the split itself reproduces on halves of the customers
    assert "member agreement >= 0.70" in members.reason
    assert f"{by_k[6].member_agreement:.3f}" in members.format()
    from pyspark.sql import Row

    from seglib.reporting.stage import selection_chart

    chart = selection_chart([Row(**row) for row in members.as_rows()])
    assert chart[:8] == b"\x89PNG\r\n\x1a\n" and len(chart) > 10_000


def test_members_are_halved_several_ways_without_mirror_images():
    from seglib.segments.selection import MEMBER_SPLITS, member_halves

    assert member_halves(2) == [(0,)] and member_halves(3) == [(0,)]
    assert member_halves(4) == [(0, 1), (0, 2), (0, 3)]  # every halving of four, each once
    halves = member_halves(8)
    assert len(halves) == MEMBER_SPLITS and len(set(halves)) == MEMBER_SPLITS
    assert all(len(half) == 4 and half[0] == 0 for half in halves)


def test_the_largest_eligible_k_is_chosen_even_after_failing_candidates():
    from seglib.contract.config import SelectionConfig
    from seglib.segments.selection import Candidate, choose_k

    # The candidates of a real log (CDNOW, 1997-09-30): k = 4 to 6 fail on prediction strength, 7 passes.
    strengths = {2: 0.99, 3: 0.98, 4: 0.82, 5: 0.72, 6: 0.89, 7: 0.96, 8: 0.65}
    candidates = [
        Candidate(k, 0.45 - 0.01 * (k == 5), 0.05, strength, strength >= 0.9, "")
        for k, strength in strengths.items()
    ]
    chosen = choose_k(candidates, SelectionConfig())
    assert chosen.k == 7 and chosen.reason.startswith("largest k of the 3 of 7 candidates")
    # None eligible: the highest silhouette of all, the lowest k among ties.
    failing = [dataclasses.replace(candidate, eligible=False) for candidate in candidates]
    fallback = choose_k(failing, SelectionConfig())
    assert fallback.k == 2 and fallback.reason.startswith("no candidate passed every bar")
