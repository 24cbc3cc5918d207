"""Trained models under model_dir (see `seglib.contract.artifacts`): which version is current, its
metadata, weights, and the pointers that publish a new one."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pyspark.sql import SparkSession

from seglib.contract.artifacts import Artifacts
from seglib.contract.errors import TrainingError
from seglib.contract.uris import mask_credentials
from seglib.platform.files import HadoopFiles


def latest_model_version(spark: SparkSession, artifacts: Artifacts, snapshot: dt.date | None = None) -> str:
    """The model trained last on `snapshot` when one was, else the model trained last on any snapshot.

    The per-snapshot pointer keeps `seg embed` of one snapshot on its own model while another job
    trains on another snapshot (and moves the overall pointer).
    """
    files = HadoopFiles(spark)
    if snapshot is not None and files.exists(artifacts.snapshot_pointer(snapshot)):
        return files.read_text(artifacts.snapshot_pointer(snapshot)).strip()
    if not files.exists(artifacts.latest_pointer):
        raise TrainingError(
            f"no trained model under {mask_credentials(artifacts.models_root)}; run `seg train` first"
        )
    return files.read_text(artifacts.latest_pointer).strip()


def read_model_metadata(spark: SparkSession, artifacts: Artifacts, version: str) -> dict[str, Any]:
    uri = artifacts.model_metadata(version)
    files = HadoopFiles(spark)
    if not files.exists(uri):
        raise TrainingError(
            f"no model {version} under {mask_credentials(artifacts.models_root)}; run `seg train`"
        )
    return dict(json.loads(files.read_text(uri)))


def model_preprocessing_version(spark: SparkSession, artifacts: Artifacts, version: str) -> str:
    """The preprocessing version whose scaled features the model was trained on."""
    preprocessing = read_model_metadata(spark, artifacts, version).get("preprocessing", {})
    if not preprocessing.get("version"):
        raise TrainingError(
            f"model {version} was trained by an older seglib that did not record its preprocessing version; "
            "run `seg features` and `seg train` again"
        )
    return str(preprocessing["version"])


def model_member_count(spark: SparkSession, artifacts: Artifacts, version: str) -> int:
    """How many members' embeddings lie side by side in the model's embedding (1 for models saved before
    `train.members`)."""
    spec = read_model_metadata(spark, artifacts, version).get("plan", {}).get("spec", {})
    return int(spec.get("members", 1))


def read_model_payload(spark: SparkSession, artifacts: Artifacts, version: str) -> bytes:
    return HadoopFiles(spark).read_bytes(artifacts.model_weights(version))


def publish_model(
    spark: SparkSession,
    artifacts: Artifacts,
    version: str,
    snapshot: dt.date,
    payload: bytes,
    metadata_text: str,
) -> None:
    """Write a trained model's files, then move the pointers to it (last, so a reader never meets a
    pointer to a half-written model)."""
    files = HadoopFiles(spark)
    files.write_bytes(artifacts.model_weights(version), payload)
    files.write_text(artifacts.model_metadata(version), metadata_text)
    files.write_text(artifacts.snapshot_pointer(snapshot), version)
    files.write_text(artifacts.latest_pointer, version)
