"""The cluster stage: segments with stable ids, names, profiles, explanations, and the saved state
that `seg score` applies to later snapshots.

Tables (one snapshot replaced per run, every row with snapshot_date and model_version):
  customer_segments    per customer: segment id and name, distances, second-nearest segment, margin,
                       reconstruction error and the novelty flag
  segment_profiles     per segment and feature: unscaled mean/median, lift, standardized difference,
                       significance, rank
  segment_catalog      per segment: name, description, action, top features, tree rules, identity
  segment_k_selection  the candidates of `cluster.k: auto` and which one was chosen
  segment_migration    customers moving between the previous snapshot's segments and this one's
  segmentation_runs    one row per run: k, reason, fidelity, agreement with the previous snapshot
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import ClusterConfig, IdentityConfig, SeglibConfig
from seglib.contract.errors import InputDataError
from seglib.contract.tables import (
    EMBEDDINGS_TABLE,
    ERROR_COLUMN,
    FEATURES_TABLE,
    MIGRATION_TABLE,
    PROFILES_TABLE,
    RUNS_TABLE,
    SEGMENT_CATALOG_TABLE,
    SEGMENTS_TABLE,
    SELECTION_TABLE,
    SNAPSHOT_COLUMN,
)
from seglib.features.preprocessing import load_feature_metadata
from seglib.platform.warehouse import Warehouse
from seglib.representation.model_store import model_member_count, model_preprocessing_version
from seglib.segments.algorithms import (
    PREDICTION,
    ClusteringModel,
    centers_of,
    fit_clusters,
    literal_map,
    novelty_threshold,
)
from seglib.segments.explanations import Surrogate, surrogate_tree
from seglib.segments.matching import Matching, cosine_matrix, jaccard_matrix, match_segments, migration
from seglib.segments.model_export import log_segmentation_model
from seglib.segments.naming import SegmentName, load_naming_rules, name_segments
from seglib.segments.profiles import SegmentProfile, collect_profiles, segment_profiles
from seglib.segments.reference import bin_shares, decile_edges
from seglib.segments.selection import Selection, adjusted_rand_index, contingency, select_k
from seglib.segments.state import (
    VECTOR_COLUMN,
    SegmentationState,
    SegmentCounts,
    SegmentValue,
    assign,
    clustering_vectors,
    run_columns,
    save_state,
    segment_counts,
    with_lifetime_value,
)

log = logging.getLogger(__name__)


def require_enough_customers(customers: int, settings: ClusterConfig, table: str, snapshot: dt.date) -> None:
    """Stop with the fix, not a Spark traceback, when there are fewer customers than segments asked for."""
    least = settings.selection.k_min if settings.k == "auto" else int(settings.k)
    if customers < least:
        key = "cluster.selection.k_min" if settings.k == "auto" else "cluster.k"
        raise InputDataError(
            f"{table} holds {customers} customers (below the novelty threshold) for snapshot {snapshot}, fewer "
            f"than the {least} segments that {key} asks for; set {key} to at most {max(customers, 2)}, or "
            "segment a snapshot with more customers"
        )


def single_model_version(embeddings: DataFrame, table: str, snapshot: dt.date) -> str:
    versions = [
        row["model_version"] for row in embeddings.select("model_version").distinct().limit(2).collect()
    ]
    if len(versions) != 1:
        raise InputDataError(
            f"{table} holds embeddings of {len(versions)} models for snapshot {snapshot}; "
            "rerun `seg embed` so that one model embeds the whole snapshot"
        )
    return str(versions[0])


@dataclass(frozen=True)
class SegmentSummary:
    segment_id: int
    name: str
    size: int
    share: float
    description: str
    action: str
    top_features: list[str]
    rules: list[str]
    continues_previous: float | None  # similarity with the previous run's segment of this id
    value: SegmentValue | None = None  # lifetime value over clv.horizon_days


@dataclass
class ClusterResult:
    snapshot: dt.date
    model_version: str
    k: int
    segments: list[SegmentSummary]
    selection: Selection | None
    surrogate_fidelity: float
    previous_snapshot: dt.date | None
    ari_with_previous: float | None
    novel_customers: int
    details: dict[str, Any] = field(default_factory=dict)

    def format(self) -> str:
        lines = []
        if self.selection is not None:
            lines += [self.selection.format(), ""]
        lines.append(
            f"{self.k} segments for snapshot {self.snapshot} (model {self.model_version}); "
            f"surrogate tree fidelity {self.surrogate_fidelity:.1%}; {self.novel_customers} novel customers"
        )
        if self.previous_snapshot is not None:
            lines.append(
                f"agreement with snapshot {self.previous_snapshot}: ARI {self.ari_with_previous:.3f}"
                if self.ari_with_previous is not None
                else f"previous snapshot {self.previous_snapshot}: no customers in common"
            )
        if self.details.get("mlflow_model_uri"):
            lines.append(f"MLflow model: {self.details['mlflow_model_uri']}")
        lines.append(format_summary(self.segments))
        return "\n".join(lines)


def format_summary(summaries: list[SegmentSummary]) -> str:
    lines = [f"{'segment':>7}  {'customers':>9}  {'share':>6}  name: top features"]
    for summary in summaries:
        identity = (
            "new" if summary.continues_previous is None else f"kept, overlap {summary.continues_previous:.2f}"
        )
        lines.append(
            f"{summary.segment_id:>7}  {summary.size:>9}  {summary.share:>6.1%}  {summary.name} ({identity}): "
            + ("; ".join(summary.top_features[:3]) or "-")
        )
    return "\n".join(lines)


def previous_run(warehouse: Warehouse, database: str, snapshot: dt.date) -> dt.date | None:
    """The latest earlier snapshot that has a segmentation run (a rerun never matches against itself)."""
    if not warehouse.exists(database, RUNS_TABLE):
        return None
    row = (
        warehouse.read(database, RUNS_TABLE)
        .where(F.col(SNAPSHOT_COLUMN) < F.lit(snapshot))
        .agg(F.max(SNAPSHOT_COLUMN))
        .first()
    )
    return row[0] if row is not None else None


def _match_to_previous(
    warehouse: Warehouse,
    database: str,
    settings: IdentityConfig,
    clustered: DataFrame,
    sizes: dict[int, int],
    members: DataFrame,
    feature_names: list[str],
    previous: dt.date | None,
    snapshot: dt.date,
) -> tuple[Matching, float | None, dict[int, str]]:
    """Match this run's clusters (PREDICTION) to the previous snapshot's segments."""
    clusters = sorted(sizes)
    if previous is None:
        return match_segments(clusters, sizes, {}, [], 1.0, 0, "first run"), None, {}
    old = warehouse.read_snapshot(database, SEGMENTS_TABLE, previous).where(F.col("segment_id") >= 0)
    catalog = warehouse.read(database, SEGMENT_CATALOG_TABLE)
    previous_catalog = catalog.where(F.col(SNAPSHOT_COLUMN) == F.lit(previous)).collect()
    old_names = {row["segment_id"]: row["segment_name"] for row in previous_catalog}
    # Ids are never reused: fresh ones start above every id of the other snapshots (not this one's, so
    # that a rerun of this snapshot hands out the same ids).
    highest = catalog.where(F.col(SNAPSHOT_COLUMN) != F.lit(snapshot)).agg(F.max("segment_id")).first()
    next_id = 0 if highest is None or highest[0] is None else int(highest[0]) + 1
    common = clustered.select("customer_id", PREDICTION).join(
        old.select("customer_id", "segment_id"), "customer_id"
    )
    overlap = contingency(common, PREDICTION, "segment_id")
    shared = sum(overlap.values())
    ari = adjusted_rand_index(overlap) if shared else None
    # Members decide when enough customers are in both snapshots: the smaller population's share.
    previous_customers = sum(row["segment_size"] for row in previous_catalog)
    if shared and shared >= settings.min_common_share * min(sum(sizes.values()), previous_customers):
        similarity, basis = jaccard_matrix(overlap), "members"
    else:
        provisional = collect_profiles(
            segment_profiles(members.withColumn("segment_id", F.col(PREDICTION)), feature_names)
        )
        previous_profiles = collect_profiles(warehouse.read_snapshot(database, PROFILES_TABLE, previous))
        similarity = cosine_matrix(
            {c: {n: s.std_diff for n, s in p.features.items()} for c, p in provisional.items()},
            {c: {n: s.std_diff for n, s in p.features.items()} for c, p in previous_profiles.items()},
        )
        basis = "profiles"
    matching = match_segments(
        clusters, sizes, similarity, sorted(old_names), settings.min_overlap, next_id, basis
    )
    return matching, ari, old_names


@dataclass
class _Fit:
    """The clustering of one snapshot's typical customers (below the novelty threshold)."""

    version: str
    vectors: DataFrame  # every customer, cached
    typical: DataFrame
    threshold: float
    selection: Selection | None
    k: int
    model: ClusteringModel
    clustered: DataFrame  # customer_id and the model's cluster index, cached
    sizes: dict[int, int]


@dataclass
class _Description:
    """The clusters as segments: ids matched to the previous run, profiles and names."""

    feature_names: list[str]
    features: DataFrame
    members: DataFrame  # typical customers with their segment id and raw features
    profiles: DataFrame  # cached
    by_segment: dict[int, SegmentProfile]
    names: dict[int, SegmentName]
    matching: Matching
    ari: float | None
    previous: dt.date | None


def cluster(spark: SparkSession, config: SeglibConfig) -> ClusterResult:
    """Cluster the snapshot's embeddings and write the segment tables and the scoring state."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    warehouse = Warehouse.from_config(spark, config)
    artifacts = Artifacts.from_config(config)
    fit = _fit(spark, warehouse, artifacts, config)
    described = _describe(spark, warehouse, artifacts, config, fit)
    stamp = run_columns(snapshot, fit.version)
    state, counts = _write_segments(spark, warehouse, artifacts, config, fit, described, stamp)
    _write_profiles(warehouse, database, snapshot, described.profiles, state, stamp)
    medians = {
        row["feature"]: row["population_median"]
        for row in described.profiles.select("feature", "population_median").distinct().collect()
    }
    surrogate = surrogate_tree(
        described.members, described.feature_names, medians, config.cluster.surrogate, config.cluster.seed
    )
    summaries = _summaries(described, surrogate, counts)
    _write_catalog(spark, warehouse, database, snapshot, fit.version, summaries, described.names)
    _write_selection(spark, warehouse, database, snapshot, fit.selection, stamp)
    if described.previous is not None:
        _write_migration(warehouse, database, snapshot, described.previous, stamp)
    result = ClusterResult(
        snapshot=snapshot,
        model_version=fit.version,
        k=fit.k,
        segments=summaries,
        selection=fit.selection,
        surrogate_fidelity=surrogate.fidelity,
        previous_snapshot=described.previous,
        ari_with_previous=described.ari,
        novel_customers=counts.novel,
        details={"matching_basis": described.matching.basis, "silhouette": _silhouette(fit)},
    )
    if config.train.mlflow.enabled:
        result.details["mlflow_model_uri"] = log_segmentation_model(spark, config, state)
    _write_run(spark, warehouse, config, result, fit, described, counts.customers)
    for cached in (described.profiles, fit.clustered, fit.vectors):
        cached.unpersist()
    log.info("clustered snapshot %s into %d segments (model %s)", snapshot, fit.k, fit.version)
    return result


def _fit(spark: SparkSession, warehouse: Warehouse, artifacts: Artifacts, config: SeglibConfig) -> _Fit:
    """Choose k (or take cluster.k) and fit the algorithm on the customers below the novelty threshold."""
    snapshot, database, settings = config.features.snapshot_date, config.storage.database, config.cluster
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    version = single_model_version(embeddings, f"{database}.{EMBEDDINGS_TABLE}", snapshot)
    space = config.cluster.space
    log.info("clustering snapshot %s in the model's %s space", snapshot, space)
    vectors = clustering_vectors(embeddings, space, f"{database}.{EMBEDDINGS_TABLE}").cache()
    threshold = novelty_threshold(vectors, ERROR_COLUMN, settings.novelty_quantile, settings.novelty_factor)
    typical = vectors.where(F.col(ERROR_COLUMN) <= F.lit(threshold))
    require_enough_customers(typical.count(), settings, f"{database}.{EMBEDDINGS_TABLE}", snapshot)
    # Member agreement applies to the embedding, where each member's embedding has its own columns.
    members = model_member_count(spark, artifacts, version) if space == "embedding" else 1
    selection = select_k(typical, VECTOR_COLUMN, settings, members) if settings.k == "auto" else None
    k = selection.k if selection is not None else int(settings.k)
    if selection is not None:
        log.info("k selection:\n%s", selection.format())
    model = fit_clusters(typical, VECTOR_COLUMN, settings, k)
    clustered = model.transform(typical).select("customer_id", PREDICTION).cache()
    sizes = {row[PREDICTION]: row["count"] for row in clustered.groupBy(PREDICTION).count().collect()}
    return _Fit(version, vectors, typical, threshold, selection, k, model, clustered, sizes)


def _describe(
    spark: SparkSession, warehouse: Warehouse, artifacts: Artifacts, config: SeglibConfig, fit: _Fit
) -> _Description:
    """Match the clusters to the previous run's segments, profile and name them."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    metadata = load_feature_metadata(
        spark, artifacts, model_preprocessing_version(spark, artifacts, fit.version)
    )
    feature_names = metadata.numeric_features
    features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot).select(
        "customer_id", *feature_names
    )
    members = fit.clustered.join(features, "customer_id")
    previous = previous_run(warehouse, database, snapshot)
    matching, ari, old_names = _match_to_previous(
        warehouse,
        database,
        config.cluster.identity,
        fit.clustered,
        fit.sizes,
        members,
        feature_names,
        previous,
        snapshot,
    )
    labelled = members.withColumn("segment_id", literal_map(matching.segment_of)[F.col(PREDICTION)]).drop(
        PREDICTION
    )
    profiles = segment_profiles(labelled, feature_names).cache()
    by_segment = collect_profiles(profiles)
    names = _names(by_segment, matching, old_names, config.cluster.naming_rules)
    return _Description(
        feature_names, features, labelled, profiles, by_segment, names, matching, ari, previous
    )


def _write_segments(
    spark: SparkSession,
    warehouse: Warehouse,
    artifacts: Artifacts,
    config: SeglibConfig,
    fit: _Fit,
    described: _Description,
    stamp: list[Column],
) -> tuple[SegmentationState, SegmentCounts]:
    """Assign every customer, write customer_segments, then save the state with its reference distributions
    (segment shares and feature deciles, what `seg score` measures drift against)."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    state = SegmentationState(
        snapshot=snapshot,
        model_version=fit.version,
        algorithm=config.cluster.algorithm,
        segment_of={int(index): segment for index, segment in described.matching.segment_of.items()},
        centers=dict(enumerate(centers_of(config.cluster.algorithm, fit.model))),
        names={segment_id: name.name for segment_id, name in described.names.items()},
        novelty_threshold=fit.threshold,
        space=config.cluster.space,
        # The reference distributions are filled in below, from the segments this state assigns.
        segment_shares={},
        feature_edges={},
        feature_shares={},
    )
    segments = assign(fit.vectors, fit.model, state).select("*", *stamp)
    warehouse.write_snapshot(
        with_lifetime_value(warehouse, database, snapshot, segments), database, SEGMENTS_TABLE, snapshot
    )
    # One aggregation gives the customer count, the shares and the novel count.
    counts = segment_counts(warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot))
    edges = decile_edges(described.features, described.feature_names)
    state = replace(
        state,
        segment_shares=counts.shares(),
        novel_share=counts.novel_share,
        feature_edges=edges,
        feature_shares=bin_shares(described.features, edges),
    )
    save_state(spark, artifacts, state, fit.model)
    return state, counts


def _write_profiles(
    warehouse: Warehouse,
    database: str,
    snapshot: dt.date,
    profiles: DataFrame,
    state: SegmentationState,
    stamp: list[Column],
) -> None:
    name_map = literal_map(state.names)
    warehouse.write_snapshot(
        profiles.select(
            "segment_id",
            name_map[F.col("segment_id")].alias("segment_name"),
            *[column for column in profiles.columns if column != "segment_id"],
            *stamp,
        ),
        database,
        PROFILES_TABLE,
        snapshot,
    )


def _summaries(described: _Description, surrogate: Surrogate, counts: SegmentCounts) -> list[SegmentSummary]:
    """The catalog's sizes count every member; the profiles describe the typical (not novel) ones."""
    names = described.names
    shares = counts.shares()
    return [
        SegmentSummary(
            segment_id=segment_id,
            name=names[segment_id].name,
            size=counts.by_segment.get(segment_id, 0),
            share=shares.get(segment_id, 0.0),
            description=names[segment_id].description,
            action=names[segment_id].action,
            top_features=profile.describe_top(),
            rules=surrogate.rules.get(segment_id, []),
            continues_previous=described.matching.similarity.get(segment_id),
            value=counts.value.get(segment_id),
        )
        for segment_id, profile in described.by_segment.items()
    ]


def _write_selection(
    spark: SparkSession,
    warehouse: Warehouse,
    database: str,
    snapshot: dt.date,
    selection: Selection | None,
    stamp: list[Column],
) -> None:
    # Written on every run (empty with a fixed k), so that a rerun never keeps an earlier run's candidates.
    warehouse.write_snapshot(
        spark.createDataFrame(
            selection.as_rows() if selection is not None else [],
            "k int, silhouette double, smallest_share double, prediction_strength double, eligible boolean, "
            "note string, chosen boolean, member_agreement double",
        ).select("*", *stamp),
        database,
        SELECTION_TABLE,
        snapshot,
    )


def _write_migration(
    warehouse: Warehouse, database: str, snapshot: dt.date, previous: dt.date, stamp: list[Column]
) -> None:
    segments = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot)
    old = warehouse.read_snapshot(database, SEGMENTS_TABLE, previous)
    warehouse.write_snapshot(
        migration(segments, old).select(F.lit(previous).alias("previous_snapshot"), "*", *stamp),
        database,
        MIGRATION_TABLE,
        snapshot,
    )


def _silhouette(fit: _Fit) -> float:
    if fit.selection is not None:
        return next(c.silhouette for c in fit.selection.candidates if c.k == fit.k)
    evaluator = ClusteringEvaluator(featuresCol=VECTOR_COLUMN, predictionCol=PREDICTION)
    return float(evaluator.evaluate(fit.model.transform(fit.typical)))


def _write_run(
    spark: SparkSession,
    warehouse: Warehouse,
    config: SeglibConfig,
    result: ClusterResult,
    fit: _Fit,
    described: _Description,
    customers: int,
) -> None:
    selection, matching = fit.selection, described.matching
    run = {
        "model_version": fit.version,
        "algorithm": config.cluster.algorithm,
        "k": fit.k,
        "k_chosen_by": "auto" if selection is not None else "config",
        "selection_reason": selection.reason if selection is not None else f"cluster.k = {fit.k}",
        "silhouette": result.details["silhouette"],
        "surrogate_fidelity": result.surrogate_fidelity,
        "previous_snapshot": described.previous,
        "ari_with_previous": described.ari,
        "matching_basis": matching.basis,
        "kept_segments": len(matching.similarity),
        "new_segments": len(matching.new_segments),
        "customers": customers,
        "novel_customers": result.novel_customers,
        "novelty_threshold": fit.threshold,
        "clustering_space": config.cluster.space,
    }
    warehouse.write_snapshot(
        spark.createDataFrame(
            [run],
            "model_version string, algorithm string, k int, k_chosen_by string, selection_reason string, "
            "silhouette double, surrogate_fidelity double, previous_snapshot date, ari_with_previous double, "
            "matching_basis string, kept_segments int, new_segments int, customers long, novel_customers long, "
            "novelty_threshold double, clustering_space string",
        ).select(F.lit(config.features.snapshot_date).alias(SNAPSHOT_COLUMN), "*"),
        config.storage.database,
        RUNS_TABLE,
        config.features.snapshot_date,
    )


def _names(
    profiles: dict[int, SegmentProfile], matching: Matching, old_names: dict[int, str], rules_path: str | None
) -> dict[int, SegmentName]:
    """Kept segments keep their name (with a description and action from today's profile); the others
    are named by the rules, avoiding the names already in use."""
    rules = load_naming_rules(rules_path)
    fresh = name_segments(profiles, rules)
    kept = {
        segment_id: old_names[segment_id] for segment_id in matching.similarity if segment_id in old_names
    }
    renamed = name_segments(
        {segment_id: p for segment_id, p in profiles.items() if segment_id not in kept},
        rules,
        set(kept.values()),
    )
    names = {}
    for segment_id in profiles:
        if segment_id in kept:
            names[segment_id] = SegmentName(
                kept[segment_id], fresh[segment_id].description, fresh[segment_id].action, "kept"
            )
        else:
            names[segment_id] = renamed[segment_id]
    return names


def _write_catalog(
    spark: SparkSession,
    warehouse: Warehouse,
    database: str,
    snapshot: dt.date,
    version: str,
    summaries: list[SegmentSummary],
    names: dict[int, SegmentName],
) -> None:
    rows = [
        (
            s.segment_id,
            s.name,
            s.description,
            s.action,
            names[s.segment_id].rule,
            s.size,
            s.share,
            s.top_features,
            s.rules,
            s.continues_previous,
            s.continues_previous is None,
            s.value.expected_purchases if s.value else None,
            s.value.expected_spend if s.value else None,
            s.value.probability_alive if s.value else None,
        )
        for s in summaries
    ]
    frame = spark.createDataFrame(
        rows,
        "segment_id int, segment_name string, description string, action string, naming_rule string, "
        "segment_size long, segment_share double, top_features array<string>, surrogate_rules array<string>, "
        "previous_similarity double, is_new boolean, expected_purchases double, expected_spend double, "
        "mean_probability_alive double",
    )
    # The lifetime value columns came later: they stay last, where they were added to older tables.
    value_columns = ["expected_purchases", "expected_spend", "mean_probability_alive"]
    warehouse.write_snapshot(
        frame.select(
            *[name for name in frame.columns if name not in value_columns],
            *run_columns(snapshot, version),
            *value_columns,
        ),
        database,
        SEGMENT_CATALOG_TABLE,
        snapshot,
    )
