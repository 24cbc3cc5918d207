"""MLflow tracking of trained models: one run per model with its plan, epoch history and files."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import MlflowConfig
from seglib.contract.errors import ConfigError, TrainingError
from seglib.contract.uris import join_uri, local_path, mask_credentials


def require_tracking(settings: MlflowConfig, artifacts: Artifacts) -> None:
    """Before training: stop when train.mlflow is enabled but MLflow is missing or has no store, rather
    than after the model has been trained."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "train.mlflow.enabled is true but MLflow is not installed: pip install 'seglib[tracking]' "
            "(Databricks Runtime ML ships it), or set train.mlflow.enabled=false"
        )
    try:
        mlflow_locations(settings, artifacts)
    except TrainingError as error:
        raise ConfigError(str(error)) from None


def mlflow_locations(settings: MlflowConfig, artifacts: Artifacts) -> tuple[str, str | None]:
    """(tracking URI, artifact root for a new experiment). Without a configured URI: MLFLOW_TRACKING_URI
    when set (Databricks sets it), else a SQLite store and an artifact folder beside the local models."""
    if settings.tracking_uri:
        return settings.tracking_uri, None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], None
    models = artifacts.model_dir
    if not models.startswith("file:"):
        raise TrainingError(
            f"train.mlflow.tracking_uri is not set and storage.model_dir ({models}) is not local: set "
            "train.mlflow.tracking_uri (for example databricks, or http://your-mlflow-server:5000)"
        )
    folder = local_path(models)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", join_uri(models, "mlartifacts")


def client_and_experiment(settings: MlflowConfig, artifacts: Artifacts) -> tuple[Any, str]:
    """A client bound to this configuration's store, and the id of its experiment (created if new)."""
    from mlflow.tracking import MlflowClient

    tracking_uri, artifact_root = mlflow_locations(settings, artifacts)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(settings.experiment, artifact_location=artifact_root)
    )
    return client, experiment_id


def track_with_mlflow(
    settings: MlflowConfig, artifacts: Artifacts, metadata: dict[str, Any], payload: bytes, metadata_text: str
) -> str:
    """One MLflow run per trained model: the plan as parameters, the epoch history as metrics, the model
    directory as artifacts. Returns the run id.

    Through a client bound to this configuration's store, never `mlflow.set_tracking_uri`: that also
    sets MLFLOW_TRACKING_URI for the whole process, so a second training in the same process (another
    model_dir, a notebook) would log into the first one's store.
    """
    import tempfile

    from mlflow.entities import Metric, Param

    client, experiment_id = client_and_experiment(settings, artifacts)
    plan = metadata["plan"]
    parameters = {**{k: v for k, v in plan.items() if k != "spec"}, **plan["spec"]}
    parameters.update(launcher=metadata["launcher"], workers=metadata["workers"], rows=metadata["rows"])
    run = client.create_run(
        experiment_id,
        run_name=metadata["version"],
        tags={"seglib.model_version": metadata["version"], "seglib.snapshot": metadata["snapshot_date"]},
    )
    run_id = str(run.info.run_id)
    try:
        # Checkpoint and model URIs may carry credentials (user:secret@, signed query strings).
        params = [Param(key, mask_credentials(str(value))[:500]) for key, value in parameters.items()]
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, int(epoch["epoch"]))
            for epoch in metadata["history"]
            for key, value in epoch.items()
            if key not in {"epoch", "phase"}
        ]
        for start in range(0, max(len(params), len(metrics)), 100):  # the store's limits per batch
            client.log_batch(run_id, metrics=metrics[start : start + 100], params=params[start : start + 100])
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "model.pt").write_bytes(payload)
            (Path(folder) / "metadata.json").write_text(metadata_text)
            client.log_artifacts(run_id, folder, artifact_path="model")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
