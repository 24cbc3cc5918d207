"""Apply the saved encoder on executors (Arrow batches) and write customer_embeddings."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
from pyspark.broadcast import Broadcast
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import SeglibConfig
from seglib.contract.tables import (
    EMBEDDING_COLUMN,
    EMBEDDINGS_TABLE,
    ERROR_COLUMN,
    FEATURE_VECTOR_COLUMN,
    FEATURES_TABLE,
    RECONSTRUCTION_COLUMN,
    SNAPSHOT_COLUMN,
)
from seglib.features.preprocessing import require_preprocessing, snapshot_preprocessing_version
from seglib.platform.warehouse import Warehouse
from seglib.representation.model_store import (
    latest_model_version,
    model_preprocessing_version,
    read_model_metadata,
    read_model_payload,
)

log = logging.getLogger(__name__)

InputRange = tuple[list[float], list[float]]  # per model input: lows, highs

ENCODED_TYPE = T.StructType(
    [
        T.StructField(EMBEDDING_COLUMN, T.ArrayType(T.FloatType())),
        T.StructField(ERROR_COLUMN, T.DoubleType()),
        T.StructField(RECONSTRUCTION_COLUMN, T.ArrayType(T.FloatType())),
    ]
)


def encode_batches(
    model_payload: bytes, input_range: InputRange | None, batches: Iterator[pd.Series]
) -> Iterator[pd.DataFrame]:
    """Executor side: load the model once per task, then embed each Arrow batch, decode it back (the
    reconstruction, one of the spaces segments are found in) and measure how well the decoder
    reconstructs it (mean squared error per customer: the novelty signal). `input_range`: the model's
    training range per input, which the encoder's inputs are clipped to (see `encode_and_decode`)."""
    import numpy as np
    import torch

    from seglib.representation.models import deserialize, encode_and_decode

    torch.set_num_threads(1)
    model = deserialize(model_payload)
    bounds = (
        (torch.tensor(input_range[0], dtype=torch.float32), torch.tensor(input_range[1], dtype=torch.float32))
        if input_range is not None
        else None
    )
    with torch.inference_mode():
        for batch in batches:
            if batch.empty:
                empty = pd.Series([], dtype=object)
                yield pd.DataFrame({EMBEDDING_COLUMN: empty, ERROR_COLUMN: [], RECONSTRUCTION_COLUMN: empty})
                continue
            inputs = torch.from_numpy(np.stack(batch.to_numpy()).astype(np.float32, copy=False))
            embeddings, reconstructions, errors = encode_and_decode(model, inputs, bounds)
            yield pd.DataFrame(
                {
                    EMBEDDING_COLUMN: list(embeddings.numpy()),
                    ERROR_COLUMN: errors.double().numpy(),
                    RECONSTRUCTION_COLUMN: list(reconstructions.numpy()),
                }
            )


def embedding_udf(
    model_payload: Broadcast[bytes], input_range: InputRange | None
) -> Callable[[Column], Column]:
    """Driver side: a pandas UDF over the broadcast model (shipped once per executor, not per task)."""

    @F.pandas_udf(ENCODED_TYPE)  # type: ignore[call-overload]
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        return encode_batches(model_payload.value, input_range, batches)

    return embed  # type: ignore[no-any-return]


def model_input_range(metadata: dict[str, Any]) -> InputRange | None:
    """The training range saved with a model; None for models trained before it was saved."""
    saved = metadata.get("input_range")
    return (list(saved["low"]), list(saved["high"])) if saved else None


def embed(spark: SparkSession, config: SeglibConfig, model_version: str | None = None) -> str:
    """Embed every customer of the snapshot with the given model (default: the one trained last on this
    snapshot, else the latest); its preprocessing version must be the one that scaled the features."""
    snapshot = config.features.snapshot_date
    artifacts = Artifacts.from_config(config)
    version = model_version or latest_model_version(spark, artifacts, snapshot)
    log.info("embedding snapshot %s with model %s", snapshot, version)
    warehouse = Warehouse.from_config(spark, config)
    features = warehouse.read_snapshot(config.storage.database, FEATURES_TABLE, snapshot)
    require_preprocessing(
        model_preprocessing_version(spark, artifacts, version),
        snapshot_preprocessing_version(features, f"{config.storage.database}.{FEATURES_TABLE}", snapshot),
        f"model {version}",
        snapshot,
    )
    payload = spark.sparkContext.broadcast(read_model_payload(spark, artifacts, version))
    bounds = model_input_range(read_model_metadata(spark, artifacts, version))
    embeddings = features.select(
        "customer_id",
        embedding_udf(payload, bounds)(F.col(FEATURE_VECTOR_COLUMN)).alias("_encoded"),
        F.lit(version).alias("model_version"),
        F.col(SNAPSHOT_COLUMN),
    ).select(
        "customer_id",
        f"_encoded.{EMBEDDING_COLUMN}",
        f"_encoded.{ERROR_COLUMN}",
        f"_encoded.{RECONSTRUCTION_COLUMN}",
        "model_version",
        SNAPSHOT_COLUMN,
    )
    warehouse.write_snapshot(embeddings, config.storage.database, EMBEDDINGS_TABLE, snapshot)
    payload.unpersist()
    log.info("embedded snapshot %s with model %s", snapshot, version)
    return version
