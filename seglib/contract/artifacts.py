"""Where seglib keeps its files under `storage.model_dir` (and the other configured folders), and how
versions are stamped.

Layout (every version folder is written once and never rewritten; pointers move last):

    model_dir/
      preprocessing/CURRENT                  the version `seg features` applies
      preprocessing/pp-<snapshot>-<stamp>/   pipeline/ and metadata.json
      autoencoder/LATEST                     the model trained last
      autoencoder/LATEST-<snapshot>          the model trained last on that snapshot
      autoencoder/<prefix>-<snapshot>-<stamp>/ model.pt, metadata.json, segmentation-<snapshot>/
      autoencoder/checkpoints/<snapshot>-<plan digest>/   (unless train.checkpoint_dir is set)
    <parent of model_dir>/reports/<snapshot>/             (unless report.directory is set)

Pure string work, no I/O: the platform layer reads and writes these locations.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from seglib.contract.config import SeglibConfig
from seglib.contract.uris import join_uri, parent_uri, resolve_uri

LATEST_POINTER = "LATEST"
PREPROCESSING_POINTER = "CURRENT"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.pt"
SEGMENTATION_STATE_FILE = "segmentation.json"


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")


def new_model_version(snapshot: dt.date, prefix: str) -> str:
    """`prefix` names the model kind (its `version_prefix`), so a folder listing shows what each model is."""
    return f"{prefix}-{snapshot:%Y%m%d}-{_stamp()}"


def new_preprocessing_version(snapshot: dt.date) -> str:
    return f"pp-{snapshot:%Y%m%d}-{_stamp()}"


def snapshot_pointer(snapshot: dt.date) -> str:
    return f"{LATEST_POINTER}-{snapshot:%Y%m%d}"


@dataclass(frozen=True)
class Artifacts:
    """The resolved folders of one configuration and every file location derived from them."""

    model_dir: str
    cache_dir: str
    checkpoint_dir: str | None = None
    report_dir: str | None = None

    @classmethod
    def from_config(cls, config: SeglibConfig) -> Artifacts:
        return cls(
            model_dir=resolve_uri(config.storage.model_dir),
            cache_dir=resolve_uri(config.storage.cache_dir),
            checkpoint_dir=resolve_uri(config.train.checkpoint_dir) if config.train.checkpoint_dir else None,
            report_dir=resolve_uri(config.report.directory) if config.report.directory is not None else None,
        )

    # Preprocessing pipelines
    @property
    def preprocessing_root(self) -> str:
        return join_uri(self.model_dir, "preprocessing")

    @property
    def preprocessing_pointer(self) -> str:
        return join_uri(self.preprocessing_root, PREPROCESSING_POINTER)

    @property
    def unversioned_preprocessing_metadata(self) -> str:
        """Where seglib before preprocessing versions kept its one pipeline's metadata."""
        return join_uri(self.preprocessing_root, METADATA_FILE)

    def preprocessing_folder(self, version: str) -> str:
        """One folder per fitted pipeline (`pipeline/` and `metadata.json`), never rewritten once complete."""
        return join_uri(self.preprocessing_root, version)

    def preprocessing_pipeline(self, version: str) -> str:
        return join_uri(self.preprocessing_folder(version), "pipeline")

    def preprocessing_metadata(self, version: str) -> str:
        return join_uri(self.preprocessing_folder(version), METADATA_FILE)

    def features_staging(self, snapshot: dt.date, run_id: str) -> str:
        """A folder of one feature run's own under cache_dir, deleted when the run ends."""
        return join_uri(self.cache_dir, "features_staging", f"{snapshot.isoformat()}-{run_id}")

    # Models
    @property
    def models_root(self) -> str:
        return join_uri(self.model_dir, "autoencoder")

    @property
    def latest_pointer(self) -> str:
        return join_uri(self.models_root, LATEST_POINTER)

    def snapshot_pointer(self, snapshot: dt.date) -> str:
        return join_uri(self.models_root, snapshot_pointer(snapshot))

    def model_folder(self, version: str) -> str:
        return join_uri(self.models_root, version)

    def model_weights(self, version: str) -> str:
        return join_uri(self.model_folder(version), WEIGHTS_FILE)

    def model_metadata(self, version: str) -> str:
        return join_uri(self.model_folder(version), METADATA_FILE)

    def checkpoints(self, snapshot: dt.date, plan_digest: str) -> str:
        """One folder per (snapshot, training plan): a rerun of the same training resumes from it."""
        root = self.checkpoint_dir or join_uri(self.models_root, "checkpoints")
        return join_uri(root, f"{snapshot:%Y%m%d}-{plan_digest}")

    # Segmentations and reports
    def segmentation_folder(self, model_version: str, snapshot: dt.date) -> str:
        """The clustering model and saved state `seg score` assigns new customers with."""
        return join_uri(self.model_folder(model_version), f"segmentation-{snapshot:%Y%m%d}")

    def segmentation_model(self, model_version: str, snapshot: dt.date) -> str:
        return join_uri(self.segmentation_folder(model_version, snapshot), "model")

    def segmentation_state(self, model_version: str, snapshot: dt.date) -> str:
        return join_uri(self.segmentation_folder(model_version, snapshot), SEGMENTATION_STATE_FILE)

    def report_folder(self, snapshot: dt.date) -> str:
        """report.directory, else a `reports` folder beside model_dir; one sub-folder per snapshot."""
        # parent_uri: a model_dir at a bucket root (s3a://bucket) keeps its reports in that bucket.
        root = self.report_dir or join_uri(parent_uri(self.model_dir), "reports")
        return join_uri(root, snapshot.isoformat())
