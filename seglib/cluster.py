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
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib import fs
from seglib.clustering import (
    PREDICTION,
    ClusteringModel,
    Selection,
    adjusted_rand_index,
    assignment_columns,
    centers_of,
    contingency,
    fit_clusters,
    literal_map,
    load_model,
    novelty_threshold,
    select_k,
)
from seglib.config import ClusterConfig, SeglibConfig
from seglib.drift import bin_shares, decile_edges
from seglib.embed import EMBEDDING_COLUMN, EMBEDDINGS_TABLE, ERROR_COLUMN
from seglib.errors import InputDataError
from seglib.features import FEATURES_TABLE, load_feature_metadata
from seglib.identity import Matching, cosine_matrix, jaccard_matrix, match_segments, migration
from seglib.paths import join_uri
from seglib.profiles import (
    SegmentName,
    SegmentProfile,
    collect_profiles,
    load_naming_rules,
    name_segments,
    segment_profiles,
    surrogate_tree,
)
from seglib.train import model_preprocessing_version, models_root
from seglib.warehouse import SNAPSHOT_COLUMN, Warehouse

log = logging.getLogger(__name__)

SEGMENTS_TABLE = "customer_segments"
PROFILES_TABLE = "segment_profiles"
CATALOG_TABLE = "segment_catalog"
SELECTION_TABLE = "segment_k_selection"
MIGRATION_TABLE = "segment_migration"
RUNS_TABLE = "segmentation_runs"
NOVEL_SEGMENT_ID = -1
NOVEL_SEGMENT_NAME = "Novel customers"


@dataclass(frozen=True)
class SegmentationState:
    """What scoring needs besides the encoder: saved beside the model as segmentation-<snapshot>/."""

    snapshot: dt.date
    model_version: str
    algorithm: str
    segment_of: dict[int, int]  # the clustering model's index -> segment id
    centers: dict[int, list[float]]  # by model index
    names: dict[int, str]  # by segment id
    novelty_threshold: float
    segment_shares: dict[int, float]  # by segment id, novel customers under NOVEL_SEGMENT_ID
    feature_edges: dict[str, list[float]]
    feature_shares: dict[str, dict[int, float]]

    def to_json(self) -> str:
        data = asdict(self) | {"snapshot": self.snapshot.isoformat()}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SegmentationState:
        data = json.loads(text)

        def ints(mapping: dict[str, Any]) -> dict[int, Any]:
            return {int(key): value for key, value in mapping.items()}

        return cls(
            snapshot=dt.date.fromisoformat(data["snapshot"]),
            model_version=data["model_version"],
            algorithm=data["algorithm"],
            segment_of=ints(data["segment_of"]),
            centers=ints(data["centers"]),
            names=ints(data["names"]),
            novelty_threshold=float(data["novelty_threshold"]),
            segment_shares=ints(data["segment_shares"]),
            feature_edges=data["feature_edges"],
            feature_shares={name: ints(shares) for name, shares in data["feature_shares"].items()},
        )


def segmentation_uri(config: SeglibConfig, version: str, snapshot: dt.date) -> str:
    return join_uri(models_root(config), version, f"segmentation-{snapshot:%Y%m%d}")


def save_state(
    spark: SparkSession, config: SeglibConfig, state: SegmentationState, model: ClusteringModel
) -> None:
    folder = segmentation_uri(config, state.model_version, state.snapshot)
    model.write().overwrite().save(join_uri(folder, "model"))
    fs.write_text(spark, join_uri(folder, "segmentation.json"), state.to_json())


def load_state(
    spark: SparkSession, config: SeglibConfig, version: str, snapshot: dt.date
) -> tuple[SegmentationState, ClusteringModel]:
    folder = segmentation_uri(config, version, snapshot)
    uri = join_uri(folder, "segmentation.json")
    if not fs.exists(spark, uri):
        raise InputDataError(
            f"no saved segmentation at {folder}; run `seg cluster` for snapshot {snapshot} with model {version}"
        )
    state = SegmentationState.from_json(fs.read_text(spark, uri))
    return state, load_model(state.algorithm, join_uri(folder, "model"))


def assign(embeddings: DataFrame, model: ClusteringModel, state: SegmentationState) -> DataFrame:
    """Customers of `embeddings` (customer_id, embedding, reconstruction_error, the vector column) with
    their segments; novel customers get segment NOVEL_SEGMENT_ID and keep the model's choice beside it."""
    columns = assignment_columns(F.col(EMBEDDING_COLUMN), F.col(PREDICTION), state.centers, state.segment_of)
    novel = F.col(ERROR_COLUMN) > F.lit(state.novelty_threshold)
    names = literal_map(state.names)
    return (
        model.transform(embeddings)
        .select(
            "customer_id",
            *[column.alias(name) for name, column in columns.items()],
            ERROR_COLUMN,
            novel.alias("is_novel"),
        )
        .select(
            "customer_id",
            F.when(F.col("is_novel"), F.lit(NOVEL_SEGMENT_ID))
            .otherwise(F.col("model_segment_id"))
            .alias("segment_id"),
            F.when(F.col("is_novel"), F.lit(NOVEL_SEGMENT_NAME))
            .otherwise(names[F.col("model_segment_id")])
            .alias("segment_name"),
            "model_segment_id",
            "distance_to_centroid",
            "second_segment_id",
            "second_distance",
            "confidence_margin",
            ERROR_COLUMN,
            "is_novel",
        )
    )


def embedding_vectors(embeddings: DataFrame) -> DataFrame:
    return embeddings.select(
        "customer_id",
        EMBEDDING_COLUMN,
        ERROR_COLUMN,
        array_to_vector(F.col(EMBEDDING_COLUMN)).alias("_vector"),
    )


def segment_counts(segments: DataFrame) -> dict[int, int]:
    """Customers per segment id (novel customers under NOVEL_SEGMENT_ID): k + 1 rows to the driver."""
    return {row["segment_id"]: int(row["count"]) for row in segments.groupBy("segment_id").count().collect()}


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
    config: SeglibConfig,
    clustered: DataFrame,
    sizes: dict[int, int],
    members: DataFrame,
    feature_names: list[str],
    previous: dt.date | None,
    snapshot: dt.date,
) -> tuple[Matching, float | None, dict[int, str]]:
    """Match this run's clusters (PREDICTION) to the previous snapshot's segments."""
    database = config.storage.database
    clusters = sorted(sizes)
    if previous is None:
        return match_segments(clusters, sizes, {}, [], 1.0, 0, "first run"), None, {}
    old = warehouse.read_snapshot(database, SEGMENTS_TABLE, previous).where(F.col("segment_id") >= 0)
    catalog = warehouse.read(database, CATALOG_TABLE)
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
    settings = config.cluster.identity
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


def cluster(spark: SparkSession, config: SeglibConfig) -> ClusterResult:
    """Cluster the snapshot's embeddings and write the segment tables and the scoring state."""
    snapshot = config.features.snapshot_date
    database = config.storage.database
    settings = config.cluster
    warehouse = Warehouse.from_config(spark, config)
    embeddings = warehouse.read_snapshot(database, EMBEDDINGS_TABLE, snapshot)
    version = single_model_version(embeddings, f"{database}.{EMBEDDINGS_TABLE}", snapshot)
    vectors = embedding_vectors(embeddings).cache()
    threshold = novelty_threshold(vectors, ERROR_COLUMN, settings.novelty_quantile, settings.novelty_factor)
    typical = vectors.where(F.col(ERROR_COLUMN) <= F.lit(threshold))
    require_enough_customers(typical.count(), settings, f"{database}.{EMBEDDINGS_TABLE}", snapshot)
    selection = select_k(typical, "_vector", settings) if settings.k == "auto" else None
    k = selection.k if selection is not None else int(settings.k)
    if selection is not None:
        log.info("k selection:\n%s", selection.format())
    model = fit_clusters(typical, "_vector", settings, k)
    clustered = model.transform(typical).select("customer_id", PREDICTION).cache()
    sizes = {row[PREDICTION]: row["count"] for row in clustered.groupBy(PREDICTION).count().collect()}

    metadata = load_feature_metadata(spark, config, model_preprocessing_version(spark, config, version))
    feature_names = metadata.numeric_features
    features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot).select(
        "customer_id", *feature_names
    )
    members = clustered.join(features, "customer_id")
    previous = previous_run(warehouse, database, snapshot)
    matching, ari, old_names = _match_to_previous(
        warehouse, config, clustered, sizes, members, feature_names, previous, snapshot
    )
    labelled_members = members.withColumn(
        "segment_id",
        literal_map(matching.segment_of)[F.col(PREDICTION)],
    ).drop(PREDICTION)
    profiles = segment_profiles(labelled_members, feature_names).cache()
    by_segment = collect_profiles(profiles)
    names = _names(by_segment, matching, old_names, settings.naming_rules)

    state = SegmentationState(
        snapshot=snapshot,
        model_version=version,
        algorithm=settings.algorithm,
        segment_of={int(index): segment for index, segment in matching.segment_of.items()},
        centers=dict(enumerate(centers_of(model))),
        names={segment_id: name.name for segment_id, name in names.items()},
        novelty_threshold=threshold,
        # The reference distributions are filled in below, from the segments this state assigns.
        segment_shares={},
        feature_edges={},
        feature_shares={},
    )
    stamp = [F.lit(snapshot).alias(SNAPSHOT_COLUMN), F.lit(version).alias("model_version")]
    warehouse.write_snapshot(
        assign(vectors, model, state).select("*", *stamp), database, SEGMENTS_TABLE, snapshot
    )
    segments = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot)
    # One aggregation gives the customer count, the shares and the novel count.
    counts = segment_counts(segments)
    total = sum(counts.values())
    edges = decile_edges(features, feature_names)
    state = replace(
        state,
        segment_shares={segment: count / total for segment, count in counts.items()},
        feature_edges=edges,
        feature_shares=bin_shares(features, edges),
    )
    save_state(spark, config, state, model)

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
    medians = {
        row["feature"]: row["population_median"]
        for row in profiles.select("feature", "population_median").distinct().collect()
    }
    surrogate = surrogate_tree(labelled_members, feature_names, medians, settings.surrogate, settings.seed)
    summaries = [
        SegmentSummary(
            segment_id=segment_id,
            name=names[segment_id].name,
            size=profile.size,
            share=profile.size / max(total, 1),
            description=names[segment_id].description,
            action=names[segment_id].action,
            top_features=profile.describe_top(),
            rules=surrogate.rules.get(segment_id, []),
            continues_previous=matching.similarity.get(segment_id),
        )
        for segment_id, profile in by_segment.items()
    ]
    _write_catalog(spark, warehouse, database, snapshot, version, summaries, names)
    # Written on every run (empty with a fixed k), so that a rerun never keeps an earlier run's candidates.
    warehouse.write_snapshot(
        spark.createDataFrame(
            selection.as_rows() if selection is not None else [],
            "k int, silhouette double, smallest_share double, prediction_strength double, eligible boolean, "
            "note string, chosen boolean",
        ).select("*", *stamp),
        database,
        SELECTION_TABLE,
        snapshot,
    )
    if previous is not None:
        old = warehouse.read_snapshot(database, SEGMENTS_TABLE, previous)
        warehouse.write_snapshot(
            migration(segments, old).select(F.lit(previous).alias("previous_snapshot"), "*", *stamp),
            database,
            MIGRATION_TABLE,
            snapshot,
        )
    silhouette = (
        next(c.silhouette for c in selection.candidates if c.k == k)
        if selection is not None
        else float(
            ClusteringEvaluator(featuresCol="_vector", predictionCol=PREDICTION).evaluate(
                model.transform(typical)
            )
        )
    )
    novel = counts.get(NOVEL_SEGMENT_ID, 0)
    result = ClusterResult(
        snapshot=snapshot,
        model_version=version,
        k=k,
        segments=summaries,
        selection=selection,
        surrogate_fidelity=surrogate.fidelity,
        previous_snapshot=previous,
        ari_with_previous=ari,
        novel_customers=novel,
        details={"matching_basis": matching.basis, "silhouette": silhouette},
    )
    run = {
        "model_version": version,
        "algorithm": settings.algorithm,
        "k": k,
        "k_chosen_by": "auto" if selection is not None else "config",
        "selection_reason": selection.reason if selection is not None else f"cluster.k = {k}",
        "silhouette": silhouette,
        "surrogate_fidelity": surrogate.fidelity,
        "previous_snapshot": previous,
        "ari_with_previous": ari,
        "matching_basis": matching.basis,
        "kept_segments": len(matching.similarity),
        "new_segments": len(matching.new_segments),
        "customers": total,
        "novel_customers": novel,
        "novelty_threshold": threshold,
    }
    warehouse.write_snapshot(
        spark.createDataFrame(
            [run],
            "model_version string, algorithm string, k int, k_chosen_by string, selection_reason string, "
            "silhouette double, surrogate_fidelity double, previous_snapshot date, ari_with_previous double, "
            "matching_basis string, kept_segments int, new_segments int, customers long, novel_customers long, "
            "novelty_threshold double",
        ).select(F.lit(snapshot).alias(SNAPSHOT_COLUMN), "*"),
        database,
        RUNS_TABLE,
        snapshot,
    )
    profiles.unpersist()
    clustered.unpersist()
    vectors.unpersist()
    log.info("clustered snapshot %s into %d segments (model %s)", snapshot, k, version)
    return result


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
        )
        for s in summaries
    ]
    frame = spark.createDataFrame(
        rows,
        "segment_id int, segment_name string, description string, action string, naming_rule string, "
        "segment_size long, segment_share double, top_features array<string>, surrogate_rules array<string>, "
        "previous_similarity double, is_new boolean",
    )
    warehouse.write_snapshot(
        frame.select("*", F.lit(snapshot).alias(SNAPSHOT_COLUMN), F.lit(version).alias("model_version")),
        database,
        CATALOG_TABLE,
        snapshot,
    )
