"""The saved preprocessing pipeline that scales raw features into the model-input vector, its metadata,
and its versions under `model_dir/preprocessing` (see `seglib.contract.artifacts`)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    ElementwiseProduct,
    Imputer,
    OneHotEncoder,
    SQLTransformer,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import Vectors
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import FeatureWeighting
from seglib.contract.errors import InputDataError
from seglib.contract.tables import (
    FEATURE_VECTOR_COLUMN,
    PREPROCESSING_VERSION_COLUMN,
)
from seglib.contract.uris import mask_credentials
from seglib.features.spec import FeatureSet, FeatureSpec
from seglib.platform.files import HadoopFiles

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Preprocessing pipeline and metadata


def family_weights(numeric: list[FeatureSpec]) -> list[float]:
    """Per standardized feature, 1 / sqrt(the number of numeric features of its family): each family
    (recency, frequency, monetary, timing, categories, ...) then carries the variance of one feature,
    however many variants of it the feature set has."""
    sizes = Counter(spec.family for spec in numeric)
    return [1.0 / math.sqrt(sizes[spec.family]) for spec in numeric]


def _numeric_stages(
    numeric: list[FeatureSpec], all_null: frozenset[str], weighting: FeatureWeighting
) -> list[Any]:
    """Stages from the numeric raw features to the `_numeric_scaled` vector."""

    def value(name: str) -> str:
        return "CAST(0.0 AS DOUBLE)" if name in all_null else f"`{name}`"

    prepared = [
        f"signum({value(spec.name)}) * log1p(abs({value(spec.name)})) AS `{spec.name}__in`"
        if spec.transform == "log1p"
        else f"{value(spec.name)} AS `{spec.name}__in`"
        for spec in numeric
    ]
    model_inputs = [f"{spec.name}__in" for spec in numeric]
    imputed = [f"{name}__imputed" for name in model_inputs]
    standardized = "_numeric_standardized" if weighting == "family" and numeric else "_numeric_scaled"
    stages: list[Any] = [
        SQLTransformer(statement=f"SELECT {', '.join(['*', *prepared])} FROM __THIS__"),
        Imputer(inputCols=model_inputs, outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol="_numeric"),
        StandardScaler(inputCol="_numeric", outputCol=standardized, withMean=True, withStd=True),
    ]
    if standardized != "_numeric_scaled":
        stages.append(
            ElementwiseProduct(
                inputCol=standardized,
                outputCol="_numeric_scaled",
                scalingVec=Vectors.dense(family_weights(numeric)),
            )
        )
    return stages


def preprocessing_pipeline(
    feature_set: FeatureSet,
    all_null: frozenset[str] = frozenset(),
    weighting: FeatureWeighting = "none",
) -> Pipeline:
    """Signed log1p of heavy tails, median imputation, standard scaling (then, with weighting "family",
    each family weighted to the variance of one feature); flags and one-hots stay 0/1.

    Flags and one-hot slots are not standardised: that would give a rare region a weight of several
    standard deviations and let a noise attribute dominate the embedding. A feature that is null for
    every customer at fitting time (no median exists) is fixed at 0 in every row.
    """
    categorical = [spec.name for spec in feature_set.categorical]
    stages: list[Any] = _numeric_stages(feature_set.numeric, all_null, weighting)
    if categorical:
        stages += [
            StringIndexer(
                inputCols=categorical,
                outputCols=[f"{name}__index" for name in categorical],
                handleInvalid="keep",
                stringOrderType="alphabetAsc",
            ),
            # The indexer maps unseen values to its extra index, so the encoder never sees one.
            OneHotEncoder(
                inputCols=[f"{name}__index" for name in categorical],
                outputCols=[f"{name}__onehot" for name in categorical],
                dropLast=False,
            ),
        ]
    stages.append(
        VectorAssembler(
            inputCols=[
                "_numeric_scaled",
                *[spec.name for spec in feature_set.flags],
                *[f"{name}__onehot" for name in categorical],
            ],
            outputCol="_scaled",
        )
    )
    return Pipeline(stages=stages)


def vector_slot_names(model: PipelineModel, feature_set: FeatureSet) -> list[str]:
    slots = [spec.name for spec in [*feature_set.numeric, *feature_set.flags]]
    indexers = [stage for stage in model.stages if hasattr(stage, "labelsArray")]
    if indexers:
        for spec, labels in zip(feature_set.categorical, indexers[0].labelsArray, strict=True):
            # handleInvalid="keep" adds one slot for values not seen when fitting
            slots += [f"{spec.name}={label}" for label in [*labels, "__unseen__"]]
    return slots


def apply_preprocessing(model: PipelineModel, raw: DataFrame) -> DataFrame:
    """Raw features in, raw features plus the scaled `features` array<float> out."""
    scaled = model.transform(raw).withColumn(
        FEATURE_VECTOR_COLUMN, vector_to_array(F.col("_scaled"), "float32")
    )
    return scaled.select(*raw.columns, FEATURE_VECTOR_COLUMN)


@dataclass(frozen=True)
class FeatureMetadata:
    """What the preprocessing pipeline was fitted on; saved beside it and reused with it."""

    features: list[dict[str, str]]  # FeatureSpec fields, in model-input order
    categories: list[str]
    channels: list[str]
    windows_days: list[int]
    trend_window_days: int
    vector_slots: list[str]
    fitted_snapshot: str
    version: str = ""  # the preprocessing version (its folder name under model_dir/preprocessing)

    @property
    def dimension(self) -> int:
        return len(self.vector_slots)

    @property
    def has_time_of_day(self) -> bool:
        """Whether the pipeline was fitted with day-part features (not on a date-only log)."""
        return any(name.startswith("daypart_") for name in self.feature_names)

    @property
    def numeric_features(self) -> list[str]:
        """Features with a numeric raw value (everything but the one-hot categoricals)."""
        return [spec["name"] for spec in self.features if spec["transform"] != "one-hot"]

    @property
    def feature_names(self) -> list[str]:
        return [spec["name"] for spec in self.features]


def current_preprocessing_version(spark: SparkSession, artifacts: Artifacts) -> str | None:
    """The version that `seg features` applies unless told otherwise; None before the first fit."""
    files = HadoopFiles(spark)
    if files.exists(artifacts.preprocessing_pointer):
        return files.read_text(artifacts.preprocessing_pointer).strip()
    if files.exists(artifacts.unversioned_preprocessing_metadata):
        raise InputDataError(
            f"the preprocessing pipeline under {mask_credentials(artifacts.preprocessing_root)} was saved by an "
            "older seglib, unversioned; run `seg features --set features.refit=true` to fit a versioned one, "
            "then retrain"
        )
    return None


def load_feature_metadata(
    spark: SparkSession, artifacts: Artifacts, version: str | None = None
) -> FeatureMetadata:
    """The metadata of one preprocessing version (default: the current one)."""
    version = version or current_preprocessing_version(spark, artifacts)
    if version is None:
        raise InputDataError(
            f"no preprocessing pipeline under {mask_credentials(artifacts.preprocessing_root)}; run `seg features` first"
        )
    uri = artifacts.preprocessing_metadata(version)
    files = HadoopFiles(spark)
    if not files.exists(uri):
        raise InputDataError(
            f"preprocessing version {version} has no metadata at {mask_credentials(uri)}; run `seg features` for "
            "the snapshot again (with features.refit=true for a new version) and retrain"
        )
    return FeatureMetadata(**{**json.loads(files.read_text(uri)), "version": version})


def save_preprocessing(
    spark: SparkSession, artifacts: Artifacts, model: PipelineModel, metadata: FeatureMetadata
) -> None:
    """Write a fitted version to its own folder (it becomes current only by `make_current`)."""
    model.write().save(artifacts.preprocessing_pipeline(metadata.version))
    HadoopFiles(spark).write_text(
        artifacts.preprocessing_metadata(metadata.version), json.dumps(asdict(metadata), indent=2)
    )


def load_preprocessing(artifacts: Artifacts, version: str) -> PipelineModel:
    return PipelineModel.load(artifacts.preprocessing_pipeline(version))


def make_current(spark: SparkSession, artifacts: Artifacts, version: str) -> None:
    HadoopFiles(spark).write_text(artifacts.preprocessing_pointer, version)


def snapshot_preprocessing_version(features: DataFrame, table: str, snapshot: dt.date) -> str:
    """The preprocessing version that scaled a snapshot's customer_features (one per snapshot)."""
    if PREPROCESSING_VERSION_COLUMN not in features.columns:
        raise InputDataError(
            f"{table} of snapshot {snapshot} was written by an older seglib and does not record its "
            "preprocessing version; run `seg features` for the snapshot again"
        )
    row = features.agg(
        F.min(PREPROCESSING_VERSION_COLUMN).alias("low"), F.max(PREPROCESSING_VERSION_COLUMN).alias("high")
    ).first()
    if row is None or row["low"] is None or row["low"] != row["high"]:
        raise InputDataError(
            f"{table} of snapshot {snapshot} does not hold exactly one preprocessing version; run `seg features` "
            "for the snapshot again"
        )
    return str(row["low"])


def require_preprocessing(expected: str, found: str, what: str, snapshot: dt.date) -> None:
    """Stop when features scaled by one preprocessing version would meet a model trained on another."""
    if expected != found:
        raise InputDataError(
            f"{what} expects features scaled by preprocessing version {expected}, but customer_features of "
            f"snapshot {snapshot} were scaled by {found}. Run `seg features` for the snapshot with the model's "
            f"version (seg score does this itself), or retrain on features of version {found}"
        )
