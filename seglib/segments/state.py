"""The saved state of a segmentation (beside its model under model_dir) and the assignment of customers
with it: what the cluster stage writes and `seg score` applies to later snapshots."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.ml.functions import array_to_vector
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import ClusteringSpace
from seglib.contract.errors import InputDataError
from seglib.contract.tables import (
    CUSTOMER_VALUE_TABLE,
    EMBEDDING_COLUMN,
    ERROR_COLUMN,
    LEGACY_NOVEL_SEGMENT_ID,
    LIFETIME_VALUE_COLUMNS,
    SNAPSHOT_COLUMN,
    SPACE_COLUMNS,
)
from seglib.platform.files import HadoopFiles
from seglib.platform.warehouse import Warehouse
from seglib.segments.algorithms import (
    PREDICTION,
    ClusteringModel,
    assignment_columns,
    literal_map,
    load_model,
)


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
    segment_shares: dict[int, float]  # by segment id, every customer (novel ones in their nearest segment)
    feature_edges: dict[str, list[float]]
    feature_shares: dict[str, dict[int, float]]
    novel_share: float = 0.0  # share of the training snapshot's customers flagged novel
    # What the centres live in (cluster.space); states saved before it existed clustered the embedding.
    space: ClusteringSpace = "embedding"

    def to_json(self) -> str:
        data = asdict(self) | {"snapshot": self.snapshot.isoformat()}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SegmentationState:
        data = json.loads(text)

        def ints(mapping: dict[str, Any]) -> dict[int, Any]:
            return {int(key): value for key, value in mapping.items()}

        shares = ints(data["segment_shares"])
        # States saved before novelty became a flag kept novel customers under a segment id of their own.
        legacy_novel_share = shares.pop(LEGACY_NOVEL_SEGMENT_ID, 0.0)
        return cls(
            snapshot=dt.date.fromisoformat(data["snapshot"]),
            model_version=data["model_version"],
            algorithm=data["algorithm"],
            segment_of=ints(data["segment_of"]),
            centers=ints(data["centers"]),
            names=ints(data["names"]),
            novelty_threshold=float(data["novelty_threshold"]),
            segment_shares=shares,
            feature_edges=data["feature_edges"],
            feature_shares={name: ints(bins) for name, bins in data["feature_shares"].items()},
            novel_share=float(data.get("novel_share", legacy_novel_share)),
            space=data.get("space", "embedding"),
        )


def run_columns(snapshot: dt.date, model_version: str) -> list[Column]:
    """The snapshot and model version that stamp every row a segmentation run writes."""
    return [F.lit(snapshot).alias(SNAPSHOT_COLUMN), F.lit(model_version).alias("model_version")]


def save_state(
    spark: SparkSession, artifacts: Artifacts, state: SegmentationState, model: ClusteringModel
) -> None:
    model.write().overwrite().save(artifacts.segmentation_model(state.model_version, state.snapshot))
    HadoopFiles(spark).write_text(
        artifacts.segmentation_state(state.model_version, state.snapshot), state.to_json()
    )


def load_state(
    spark: SparkSession, artifacts: Artifacts, version: str, snapshot: dt.date
) -> tuple[SegmentationState, ClusteringModel]:
    uri = artifacts.segmentation_state(version, snapshot)
    if not HadoopFiles(spark).exists(uri):
        raise InputDataError(
            f"no saved segmentation at {artifacts.segmentation_folder(version, snapshot)}; run `seg cluster` "
            f"for snapshot {snapshot} with model {version}"
        )
    state = SegmentationState.from_json(HadoopFiles(spark).read_text(uri))
    return state, load_model(state.algorithm, artifacts.segmentation_model(version, snapshot))


def assign(embeddings: DataFrame, model: ClusteringModel, state: SegmentationState) -> DataFrame:
    """Customers of `embeddings` (as `clustering_vectors` gives them, in the state's space) with their
    segments. Every customer gets the model's segment; `is_novel` flags those whose reconstruction
    error is above the threshold. Novelty is a flag, not a segment: a customer base that drifts away from
    the training snapshot (an ageing cohort) still gets marketing segments while the flag and the drift
    record say that it is time to retrain."""
    columns = assignment_columns(F.col(POINTS_COLUMN), F.col(PREDICTION), state.centers, state.segment_of)
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
            F.col("model_segment_id").alias("segment_id"),
            names[F.col("model_segment_id")].alias("segment_name"),
            # Kept for the warehouse queries written when novel customers had a segment of their own:
            # since novelty became a flag it always equals segment_id.
            "model_segment_id",
            "distance_to_centroid",
            "second_segment_id",
            "second_distance",
            "confidence_margin",
            ERROR_COLUMN,
            "is_novel",
        )
    )


def with_lifetime_value(
    warehouse: Warehouse, database: str, snapshot: dt.date, segments: DataFrame
) -> DataFrame:
    """`segments` with the snapshot's lifetime value columns (LIFETIME_VALUE_COLUMNS) at the end: null for
    customers without a purchase, and for all when the features stage wrote no customer_value rows."""
    if warehouse.exists(database, CUSTOMER_VALUE_TABLE):
        values = warehouse.read_snapshot(database, CUSTOMER_VALUE_TABLE, snapshot).select(
            "customer_id", *LIFETIME_VALUE_COLUMNS
        )
        return segments.join(values, "customer_id", "left").select(*segments.columns, *LIFETIME_VALUE_COLUMNS)
    return segments.select("*", *[F.lit(None).cast("double").alias(name) for name in LIFETIME_VALUE_COLUMNS])


POINTS_COLUMN = "_points"  # the customer's point in the clustering space, as an array
VECTOR_COLUMN = "_vector"  # the same point as an ML vector, for the clustering algorithms


def clustering_vectors(embeddings: DataFrame, space: ClusteringSpace, table: str) -> DataFrame:
    """customer_id, the embedding, the reconstruction error and the customer's point in `space` (as
    POINTS_COLUMN and VECTOR_COLUMN) from rows of the embeddings table `table`."""
    column = SPACE_COLUMNS[space]
    if column not in embeddings.columns:
        raise InputDataError(
            f"{table} has no column {column!r}, which cluster.space={space} needs: it was written by an "
            "older seglib; run `seg embed` for this snapshot again (it rewrites the snapshot's rows), or "
            "set cluster.space=embedding"
        )
    return embeddings.select(
        "customer_id",
        EMBEDDING_COLUMN,
        ERROR_COLUMN,
        F.col(column).alias(POINTS_COLUMN),
        array_to_vector(F.col(column)).alias(VECTOR_COLUMN),
    )


@dataclass(frozen=True)
class SegmentValue:
    """A segment's lifetime value over clv.horizon_days: totals, and the mean chance of being active."""

    expected_purchases: float | None  # None where the models could not be fitted
    expected_spend: float | None
    probability_alive: float | None  # mean over the members with a purchase
    valued_customers: int


@dataclass(frozen=True)
class SegmentCounts:
    by_segment: dict[int, int]  # every customer, novel ones included
    novel: int
    value: dict[int, SegmentValue] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return sum(self.by_segment.values())

    def shares(self) -> dict[int, float]:
        return {segment: count / max(self.customers, 1) for segment, count in self.by_segment.items()}

    @property
    def novel_share(self) -> float:
        return self.novel / max(self.customers, 1)


def segment_counts(segments: DataFrame) -> SegmentCounts:
    """Customers per segment, the novel ones among them and the segments' lifetime value: one aggregation,
    at most 2k rows to the driver."""
    valued = "expected_purchases" in segments.columns
    extra = (
        [
            F.sum("expected_purchases").alias("purchases"),
            F.sum("expected_spend").alias("spend"),
            F.sum("probability_alive").alias("alive"),
            F.count("probability_alive").alias("valued"),
        ]
        if valued
        else []
    )
    by_segment: dict[int, int] = {}
    totals: dict[int, list[Any]] = {}
    novel = 0
    for row in (
        segments.groupBy("segment_id", "is_novel").agg(F.count(F.lit(1)).alias("count"), *extra).collect()
    ):
        segment = row["segment_id"]
        by_segment[segment] = by_segment.get(segment, 0) + int(row["count"])
        novel += int(row["count"]) if row["is_novel"] else 0
        if valued:
            sums = totals.setdefault(segment, [None, None, None, 0])
            for index, name in enumerate(("purchases", "spend", "alive", "valued")):
                if row[name] is not None:  # a sum over no value is null: the model was not fitted
                    sums[index] = (sums[index] or 0) + row[name]
    value = {
        segment: SegmentValue(
            purchases, spend, alive / count if alive is not None and count else None, int(count)
        )
        for segment, (purchases, spend, alive, count) in totals.items()
    }
    return SegmentCounts(by_segment, novel, value)
