"""The saved state of a segmentation (beside its model under model_dir) and the assignment of customers
with it: what the cluster stage writes and `seg score` applies to later snapshots."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.ml.functions import array_to_vector
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.errors import InputDataError
from seglib.contract.tables import (
    EMBEDDING_COLUMN,
    ERROR_COLUMN,
    NOVEL_SEGMENT_ID,
    NOVEL_SEGMENT_NAME,
    SNAPSHOT_COLUMN,
)
from seglib.platform.files import HadoopFiles
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
