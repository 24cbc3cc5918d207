"""One MLflow pyfunc model of a segmentation: raw feature columns in, segment id, name, distance, margin
and novelty out, the same as `seg score` gives for the same customer.

The Spark preprocessing pipeline is exported as arrays (signed log1p, the imputer's medians, the
scaler's means and deviations, family weights, the string indexers' labels) and applied with numpy, so
the model scores a pandas frame without Spark (`mlflow.pyfunc.load_model(uri).predict(frame)`) or a
Spark column through `mlflow.pyfunc.spark_udf`. The encoder is the trained torch model; segments are
the nearest k-means centre, mapped to the segmentation's stable segment ids. Exported for k-means
segmentations (the default); other algorithms assign by their own rules, which this model does not
reproduce, so none is logged for them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.feature import ElementwiseProduct, ImputerModel, StandardScalerModel
from pyspark.sql import SparkSession

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import ClusteringSpace, SeglibConfig
from seglib.contract.errors import InputDataError
from seglib.features.preprocessing import FeatureMetadata, load_feature_metadata, load_preprocessing
from seglib.representation.embedding import model_input_range
from seglib.representation.model_store import (
    model_preprocessing_version,
    read_model_metadata,
    read_model_payload,
)
from seglib.representation.tracking import client_and_experiment, mlflow_locations
from seglib.segments.state import SegmentationState

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = {
    "segment_id": "integer",
    "segment_name": "string",
    "distance_to_centroid": "double",
    "second_segment_id": "integer",
    "second_distance": "double",
    "confidence_margin": "double",
    "reconstruction_error": "double",
    "is_novel": "boolean",
}
SCORING_FILE = "seglib_scoring.json"
ENCODER_FILE = "encoder.pt"


@dataclass(frozen=True)
class ScoringArrays:
    """Everything but the encoder weights, as plain lists (saved as JSON inside the MLflow model)."""

    numeric: list[str]
    log_transformed: list[bool]
    all_null: list[bool]
    medians: list[float]
    means: list[float]
    deviations: list[float]
    weights: list[float]
    flags: list[str]
    categorical: dict[str, list[str]]  # column -> the indexer's labels (alphabetical), unseen last
    input_low: list[float] | None
    input_high: list[float] | None
    centers: list[list[float]]  # by the clustering model's index
    segment_of: list[int]  # by the clustering model's index
    names: dict[str, str]  # by segment id
    novelty_threshold: float
    # What the centres live in (cluster.space); models logged before it existed clustered the embedding.
    space: ClusteringSpace = "embedding"

    @property
    def input_columns(self) -> list[str]:
        return [*self.numeric, *self.flags, *self.categorical]


def export_preprocessing(model: PipelineModel, metadata: FeatureMetadata) -> dict[str, Any]:
    """The fitted pipeline's numbers, in the order of its vector slots."""
    numeric = [spec for spec in metadata.features if spec["transform"] in ("log1p", "scale")]
    statement = next(stage.getStatement() for stage in model.stages if hasattr(stage, "getStatement"))
    all_null = set(re.findall(r"CAST\(0\.0 AS DOUBLE\) AS `([^`]+)__in`", statement))
    imputer = next(stage for stage in model.stages if isinstance(stage, ImputerModel))
    surrogates = imputer.surrogateDF.first()
    assert surrogates is not None  # the imputer keeps one row of medians
    scaler = next(stage for stage in model.stages if isinstance(stage, StandardScalerModel))
    weighting = [stage for stage in model.stages if isinstance(stage, ElementwiseProduct)]
    indexers = [stage for stage in model.stages if hasattr(stage, "labelsArray")]
    categorical = [spec["name"] for spec in metadata.features if spec["transform"] == "one-hot"]
    return {
        "numeric": [spec["name"] for spec in numeric],
        "log_transformed": [spec["transform"] == "log1p" for spec in numeric],
        "all_null": [spec["name"] in all_null for spec in numeric],
        "medians": [float(surrogates[f"{spec['name']}__in"]) for spec in numeric] if numeric else [],
        "means": [float(value) for value in scaler.mean.toArray()],
        "deviations": [float(value) for value in scaler.std.toArray()],
        "weights": (
            [float(value) for value in weighting[0].getScalingVec().toArray()]
            if weighting
            else [1.0] * len(numeric)
        ),
        "flags": [spec["name"] for spec in metadata.features if spec["transform"] == "flag"],
        "categorical": dict(
            zip(categorical, [list(labels) for labels in indexers[0].labelsArray], strict=True)
        )
        if indexers
        else {},
    }


def scoring_arrays(
    preprocessing: dict[str, Any],
    input_range: tuple[list[float], list[float]] | None,
    state: SegmentationState,
) -> ScoringArrays:
    indices = sorted(state.centers)
    return ScoringArrays(
        **preprocessing,
        input_low=input_range[0] if input_range else None,
        input_high=input_range[1] if input_range else None,
        centers=[state.centers[index] for index in indices],
        segment_of=[state.segment_of[index] for index in indices],
        names={str(segment): name for segment, name in state.names.items()},
        novelty_threshold=state.novelty_threshold,
        space=state.space,
    )


def scaled_inputs(arrays: ScoringArrays, frame: pd.DataFrame) -> np.ndarray:
    """The model-input vectors of raw feature rows, as the Spark pipeline computes them."""
    parts = []
    if arrays.numeric:
        raw = frame[arrays.numeric].astype("float64").to_numpy()
        logged = np.where(arrays.log_transformed, np.sign(raw) * np.log1p(np.abs(raw)), raw)
        logged = np.where(arrays.all_null, 0.0, logged)
        imputed = np.where(np.isnan(logged), np.asarray(arrays.medians), logged)
        deviations = np.asarray(arrays.deviations)
        # Spark's StandardScaler gives 0 for a feature without variance.
        safe = np.where(deviations > 0, deviations, 1.0)
        standardized = np.where(deviations > 0, (imputed - np.asarray(arrays.means)) / safe, 0.0)
        parts.append(standardized * np.asarray(arrays.weights))
    if arrays.flags:
        parts.append(frame[arrays.flags].astype("float64").to_numpy())
    for column, labels in arrays.categorical.items():
        slot = {label: index for index, label in enumerate(labels)}
        # handleInvalid="keep": unseen values and nulls take the extra last slot.
        positions = frame[column].map(lambda value, slot=slot: slot.get(value, len(slot))).to_numpy()
        parts.append(np.eye(len(labels) + 1)[positions.astype(int)])
    return np.hstack(parts).astype(np.float32)


def assign_segments(arrays: ScoringArrays, points: np.ndarray, errors: np.ndarray) -> pd.DataFrame:
    """Nearest centre (k-means' own rule) to each point of the clustering space, its segment id and name,
    the second nearest segment."""
    centers = np.asarray(arrays.centers, dtype=np.float64)
    distances = np.sqrt(((points[:, None, :].astype(np.float64) - centers[None, :, :]) ** 2).sum(axis=2))
    order = np.argsort(distances, axis=1, kind="stable")
    rows = np.arange(len(points))
    own, second = distances[rows, order[:, 0]], distances[rows, order[:, 1]]
    segment_of = np.asarray(arrays.segment_of)
    segments = segment_of[order[:, 0]]
    return pd.DataFrame(
        {
            "segment_id": segments.astype("int32"),
            "segment_name": [arrays.names[str(segment)] for segment in segments],
            "distance_to_centroid": own,
            "second_segment_id": segment_of[order[:, 1]].astype("int32"),
            "second_distance": second,
            "confidence_margin": np.where(second > 0, 1 - own / np.where(second > 0, second, 1.0), 0.0),
            "reconstruction_error": errors,
            "is_novel": errors > arrays.novelty_threshold,
        }
    )


def _python_model_class() -> type:
    import mlflow.pyfunc

    class SegmentationModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
        """seglib's segmentation as an MLflow pyfunc model (see the module docstring)."""

        def load_context(self, context: Any) -> None:
            from seglib.representation.models import deserialize

            self.arrays = ScoringArrays(**json.loads(Path(context.artifacts["scoring"]).read_text()))
            self.encoder = deserialize(Path(context.artifacts["encoder"]).read_bytes())

        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            import torch

            from seglib.representation.models import encode_and_decode

            inputs = torch.from_numpy(scaled_inputs(self.arrays, model_input))
            bounds = None
            if self.arrays.input_low is not None and self.arrays.input_high is not None:
                bounds = (
                    torch.tensor(self.arrays.input_low, dtype=torch.float32),
                    torch.tensor(self.arrays.input_high, dtype=torch.float32),
                )
            with torch.inference_mode():
                embeddings, reconstructions, errors = encode_and_decode(self.encoder, inputs, bounds)
            points = reconstructions if self.arrays.space == "reconstruction" else embeddings
            return assign_segments(self.arrays, points.numpy(), errors.double().numpy())

    return SegmentationModel


def signature(arrays: ScoringArrays) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("double", name) for name in [*arrays.numeric, *arrays.flags]]
    inputs += [ColSpec("string", name) for name in arrays.categorical]
    outputs = [ColSpec(kind, name) for name, kind in OUTPUT_COLUMNS.items()]  # type: ignore[arg-type]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))  # type: ignore[arg-type]


def save_pyfunc(arrays: ScoringArrays, encoder_payload: bytes, folder: Path) -> Path:
    """The MLflow model folder (MLmodel, the Python model, the arrays and the encoder)."""
    import mlflow.pyfunc

    files = folder / "files"
    files.mkdir(parents=True)
    (files / SCORING_FILE).write_text(json.dumps(asdict(arrays)))
    (files / ENCODER_FILE).write_bytes(encoder_payload)
    model_path = folder / "model"
    mlflow.pyfunc.save_model(
        path=str(model_path),
        python_model=_python_model_class()(),
        artifacts={"scoring": str(files / SCORING_FILE), "encoder": str(files / ENCODER_FILE)},
        signature=signature(arrays),
    )
    return model_path


def staging_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="seglib-pyfunc-"))


def log_segmentation_model(spark: SparkSession, config: SeglibConfig, state: SegmentationState) -> str | None:
    """Log the snapshot's segmentation as an MLflow pyfunc model in its own run (and register it, with
    the configured alias, when `train.mlflow.registered_model` is set). Returns the model's URI
    (`models:/name/version` when registered, else `runs:/id/segmentation_model`); None when the
    segmentation's algorithm is not k-means."""
    import shutil

    if state.algorithm != "kmeans":
        log.warning("no MLflow model for a %s segmentation: only k-means is exported", state.algorithm)
        return None
    artifacts = Artifacts.from_config(config)
    settings = config.train.mlflow
    preprocessing_version = model_preprocessing_version(spark, artifacts, state.model_version)
    arrays = scoring_arrays(
        export_preprocessing(
            load_preprocessing(artifacts, preprocessing_version),
            load_feature_metadata(spark, artifacts, preprocessing_version),
        ),
        model_input_range(read_model_metadata(spark, artifacts, state.model_version)),
        state,
    )
    client, experiment_id = client_and_experiment(settings, artifacts)
    run = client.create_run(
        experiment_id,
        run_name=f"segmentation-{state.snapshot}",
        tags={"seglib.model_version": state.model_version, "seglib.snapshot": state.snapshot.isoformat()},
    )
    folder = staging_folder()
    try:
        model_path = save_pyfunc(arrays, read_model_payload(spark, artifacts, state.model_version), folder)
        client.log_artifacts(run.info.run_id, str(model_path), "segmentation_model")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    client.set_terminated(run.info.run_id)
    uri = f"runs:/{run.info.run_id}/segmentation_model"
    if settings.registered_model is not None:
        uri = register(client, settings.registered_model, settings.alias, uri, run.info.run_id)
    log.info("logged the segmentation of %s as MLflow model %s", state.snapshot, uri)
    return uri


def register(client: Any, name: str, alias: str, source: str, run_id: str) -> str:
    """A new version of the registered model, with `alias` moved to it."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if "already exists" not in str(error).lower() and "RESOURCE_ALREADY_EXISTS" not in str(error):
            raise
    version = client.create_model_version(name, source, run_id=run_id)
    client.set_registered_model_alias(name, alias, version.version)
    return f"models:/{name}/{version.version}"


def logged_segmentation(config: SeglibConfig, uri: str) -> tuple[dt.date, str]:
    """(snapshot, model version) of the segmentation an MLflow model URI was logged from (its run's tags)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking_uri, _ = mlflow_locations(config.train.mlflow, Artifacts.from_config(config))
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run_id: str | None
        if uri.startswith("runs:/"):
            run_id = uri.removeprefix("runs:/").split("/")[0]
        elif "@" in uri:
            name, alias = uri.removeprefix("models:/").split("@", 1)
            run_id = client.get_model_version_by_alias(name, alias).run_id
        else:
            name, number = uri.removeprefix("models:/").rsplit("/", 1)
            run_id = client.get_model_version(name, number).run_id
        if run_id is None:
            raise ValueError("the model version names no run")
        tags = client.get_run(run_id).data.tags
    except (MlflowException, ValueError) as error:
        raise InputDataError(f"score.model_uri {uri}: {str(error).splitlines()[0]}") from None
    if "seglib.snapshot" not in tags or "seglib.model_version" not in tags:
        raise InputDataError(
            f"score.model_uri {uri} was not logged by seglib's cluster stage (no seglib tags)"
        )
    return dt.date.fromisoformat(tags["seglib.snapshot"]), tags["seglib.model_version"]
