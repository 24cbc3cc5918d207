"""train.mlflow is checked before training, so a missing MLflow or store never costs a trained model."""

from __future__ import annotations

import importlib.util

import pytest

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import load_config
from seglib.contract.errors import ConfigError
from seglib.representation.tracking import mlflow_locations, require_tracking


def test_a_remote_model_dir_without_a_tracking_uri_is_refused_before_training(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(None, ["train.mlflow.enabled=true", "storage.model_dir=s3a://bucket/seglib/models"])
    with pytest.raises(ConfigError, match=r"set train\.mlflow\.tracking_uri"):
        require_tracking(config.train.mlflow, Artifacts.from_config(config))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "databricks")
    require_tracking(config.train.mlflow, Artifacts.from_config(config))
    assert mlflow_locations(config.train.mlflow, Artifacts.from_config(config)) == ("databricks", None)


def test_enabled_tracking_without_mlflow_installed_names_the_extra(monkeypatch, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "mlflow" else find_spec(name)
    )
    config = load_config(None, ["train.mlflow.enabled=true", f"storage.model_dir={tmp_path / 'models'}"])
    with pytest.raises(ConfigError, match=r"pip install 'seglib\[tracking\]'"):
        require_tracking(config.train.mlflow, Artifacts.from_config(config))
