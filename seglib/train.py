"""Driver side of training: Petastorm converter, Horovod launch on Spark executors, model artefacts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib import fs, store
from seglib.config import SeglibConfig
from seglib.errors import ConfigError, TrainingError
from seglib.features import (
    FEATURE_VECTOR_COLUMN,
    FEATURES_TABLE,
    load_feature_metadata,
    preprocessing_uri,
    snapshot_preprocessing_version,
)
from seglib.model import AutoencoderSpec
from seglib.paths import join_uri, local_path, mask_credentials, resolve_uri
from seglib.training import RankResult, TrainingPlan, train_rank, train_rank_torch_distributed
from seglib.warehouse import Warehouse

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")
LATEST_POINTER = "LATEST"


class Launcher(Protocol):
    """Runs a function on N workers and returns one result per worker (rank order)."""

    relays_rank_output: bool  # whether the ranks' own progress lines reach the driver's console

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]: ...


class HorovodSparkLauncher:
    """`horovod.spark.run`: one Spark task per rank; Gloo between them (NCCL for GPU tensors when
    Horovod was built with it). Rank output (the per-epoch progress) is relayed to the driver."""

    relays_rank_output = True

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]:
        import horovod.spark

        # Petastorm 0.12 on pyarrow 14 warns on every read (legacy dataset API, see STACK.md).
        env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}
        # Horovod's background loop batches collectives once per cycle (default 1 ms), which adds up to a
        # cycle of latency to every step's gradient allreduce: most of a step for customer-sized models
        # (bench/train_throughput.py: 0.56 -> 0.78 of a plain loop on 2 workers with 0.1 ms).
        env.setdefault("HOROVOD_CYCLE_TIME", "0.1")
        return list(
            horovod.spark.run(fn, args=tuple(args), num_proc=num_proc, use_gloo=True, verbose=1, env=env)
        )


class TorchDistributorLauncher:
    """`pyspark.ml.torch.distributor.TorchDistributor`: Spark's own launcher (barrier tasks,
    torch.distributed over Gloo), the path Databricks recommends on runtimes without Horovod.
    It returns rank 0's result only; rank output stays in the executors' logs."""

    relays_rank_output = False

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]:
        from pyspark.ml.torch.distributor import TorchDistributor

        # use_gpu makes Spark schedule a GPU per task, so it follows train.device; auto asks for one
        # only where the cluster offers GPUs (spark.task.resource.gpu.amount is set).
        use_gpu = self.device == "cuda" or (self.device == "auto" and _cluster_offers_gpus())
        distributor = TorchDistributor(num_processes=num_proc, local_mode=False, use_gpu=use_gpu)
        return [distributor.run(fn, *args)]  # type: ignore[list-item]


def _cluster_offers_gpus() -> bool:
    from pyspark import SparkContext

    context = SparkContext.getOrCreate()
    return bool(context.getConf().get("spark.task.resource.gpu.amount", None))


LAUNCHERS: dict[str, tuple[Callable[[str], Launcher], Callable[..., RankResult]]] = {
    "horovod": (HorovodSparkLauncher, train_rank),
    "torch_distributor": (TorchDistributorLauncher, train_rank_torch_distributed),
}


@dataclass(frozen=True)
class TrainedModel:
    version: str
    uri: str
    history: list[dict[str, Any]]
    rows: int
    resumed_from_epoch: int = 0
    precision: str = "float32"

    def format(self) -> str:
        last = self.history[-1]
        validation = [epoch["validation_loss"] for epoch in self.history if "validation_loss" in epoch]
        parts = [
            f"trained model {self.version} on {self.rows} customers in {last['epoch']} epochs ({self.precision})"
        ]
        parts.append(f"final training loss {last['loss']:.4f}")
        if validation:
            parts.append(f"best validation loss {min(validation):.4f}")
        if self.resumed_from_epoch:
            parts.append(f"resumed after epoch {self.resumed_from_epoch}")
        return ", ".join(parts)


def idec_clusters(config: SeglibConfig) -> int:
    if config.train.idec.clusters is not None:
        return config.train.idec.clusters
    if config.cluster.k == "auto":
        raise ConfigError(
            "train.model=idec needs a number of clusters: set train.idec.clusters, or a fixed cluster.k "
            "(cluster.k is auto)"
        )
    return int(config.cluster.k)


def models_root(config: SeglibConfig) -> str:
    return join_uri(resolve_uri(config.storage.model_dir), "autoencoder")


def new_model_version(snapshot: dt.date, kind: str = "autoencoder") -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    prefix = {"autoencoder": "ae", "vae": "vae", "idec": "idec"}[kind]
    return f"{prefix}-{snapshot:%Y%m%d}-{stamp}"


def snapshot_pointer(snapshot: dt.date) -> str:
    return f"{LATEST_POINTER}-{snapshot:%Y%m%d}"


def latest_model_version(spark: SparkSession, config: SeglibConfig, snapshot: dt.date | None = None) -> str:
    """The model trained last on `snapshot` when one was, else the model trained last on any snapshot.

    The per-snapshot pointer keeps `seg embed` of one snapshot on its own model while another job
    trains on another snapshot (and moves the overall pointer).
    """
    root = models_root(config)
    if snapshot is not None and fs.exists(spark, join_uri(root, snapshot_pointer(snapshot))):
        return fs.read_text(spark, join_uri(root, snapshot_pointer(snapshot))).strip()
    pointer = join_uri(root, LATEST_POINTER)
    if not fs.exists(spark, pointer):
        raise TrainingError(f"no trained model under {mask_credentials(root)}; run `seg train` first")
    return fs.read_text(spark, pointer).strip()


def read_model_metadata(spark: SparkSession, config: SeglibConfig, version: str) -> dict[str, Any]:
    uri = join_uri(models_root(config), version, "metadata.json")
    if not fs.exists(spark, uri):
        raise TrainingError(f"no model {version} under {mask_credentials(models_root(config))}; run `seg train`")
    return dict(json.loads(fs.read_text(spark, uri)))


def model_preprocessing_version(spark: SparkSession, config: SeglibConfig, version: str) -> str:
    """The preprocessing version whose scaled features the model was trained on."""
    preprocessing = read_model_metadata(spark, config, version).get("preprocessing", {})
    if not preprocessing.get("version"):
        raise TrainingError(
            f"model {version} was trained by an older seglib that did not record its preprocessing version; "
            "run `seg features` and `seg train` again"
        )
    return str(preprocessing["version"])


def plan_training(config: SeglibConfig, input_dim: int, rows: int) -> TrainingPlan:
    settings = config.train
    # Each rank takes this many steps per epoch; together they see about every row once.
    steps = max(1, math.ceil(rows / (settings.batch_size * settings.num_proc)))
    is_idec = settings.model == "idec"
    return TrainingPlan(
        spec=AutoencoderSpec(
            input_dim=input_dim,
            hidden_dims=tuple(settings.hidden_dims),
            embedding_dim=settings.embedding_dim,
            dropout=settings.dropout,
            kind=settings.model,
            activation=settings.activation,
            batch_norm=settings.batch_norm,
            clusters=idec_clusters(config) if is_idec else 0,
        ),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        steps_per_epoch=steps,
        feature_column=FEATURE_VECTOR_COLUMN,
        warmup_epochs=settings.warmup_epochs,
        patience=settings.patience,
        min_delta=settings.min_delta,
        corruption=settings.corruption,
        vae_beta=settings.vae_beta,
        idec_epochs=settings.idec.epochs if is_idec else 0,
        idec_weight=settings.idec.weight,
        idec_tolerance=settings.idec.tolerance,
        reader_workers=settings.reader_workers,
        shard_cache_bytes=settings.shard_cache_mib << 20,
        device=settings.device,
        precision=settings.precision,
        progress=settings.progress,
    )


def checkpoint_location(config: SeglibConfig, plan: TrainingPlan, preprocessing_version: str) -> str:
    """One folder per (snapshot, preprocessing version, plan): a rerun of the same training finds it, a
    different plan never resumes from it."""
    identity = {k: v for k, v in asdict(plan).items() if k not in {"checkpoint_uri", "progress"}}
    identity.update(snapshot=config.features.snapshot_date.isoformat(), preprocessing=preprocessing_version)
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    root = (
        resolve_uri(config.train.checkpoint_dir)
        if config.train.checkpoint_dir
        else join_uri(models_root(config), "checkpoints")
    )
    return join_uri(root, f"{config.features.snapshot_date:%Y%m%d}-{digest}")


def latest_checkpoint(location: str) -> tuple[str, bytes] | None:
    names = [name for name in store.list_names(location) if name.startswith("epoch-")]
    if not names:
        return None
    return names[-1], store.read_bytes(join_uri(location, names[-1]))


def raise_rank_failures(results: list[RankResult]) -> None:
    failed = [result for result in results if result.error]
    if failed:
        details = "\n".join(
            f"--- rank {result.rank} of {result.size} ---\n{result.error}" for result in failed
        )
        raise TrainingError(f"training failed on {len(failed)} of {len(results)} ranks:\n{details}")


def split_for_validation(
    features: DataFrame, config: SeglibConfig, rows: int
) -> tuple[DataFrame, DataFrame | None]:
    """Hold out a share of customers, chosen by a hash of the id so the split is the same on a rerun."""
    settings = config.train
    fraction = min(settings.validation_fraction, settings.validation_max_rows / max(rows, 1))
    # Too few held-out rows would leave some workers without a Parquet row group to read.
    if fraction * rows < 8 * settings.num_proc:
        return features.select(FEATURE_VECTOR_COLUMN), None
    bucket = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(settings.seed)), F.lit(100_000))
    held_out = bucket < F.lit(int(fraction * 100_000))
    return (
        features.where(~held_out).select(FEATURE_VECTOR_COLUMN),
        features.where(held_out).select(FEATURE_VECTOR_COLUMN),
    )


def train(spark: SparkSession, config: SeglibConfig) -> TrainedModel:
    """Train the representation model on the snapshot's scaled features on Spark executors (Horovod by
    default), every rank reading its shard through Petastorm; resumes an interrupted run of the same
    plan from its last epoch checkpoint."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    snapshot = config.features.snapshot_date
    warehouse = Warehouse.from_config(spark, config)
    snapshot_features = warehouse.read_snapshot(config.storage.database, FEATURES_TABLE, snapshot)
    # The version that scaled this snapshot's rows, not whichever is current now.
    preprocessing_version = snapshot_preprocessing_version(
        snapshot_features, f"{config.storage.database}.{FEATURES_TABLE}", snapshot
    )
    metadata = load_feature_metadata(spark, config, preprocessing_version)
    features = snapshot_features.select("customer_id", FEATURE_VECTOR_COLUMN)
    rows = features.count()
    training_rows, validation_rows = split_for_validation(features, config, rows)
    counted = training_rows.count()
    plan = plan_training(config, metadata.dimension, counted)
    location = checkpoint_location(config, plan, preprocessing_version)
    plan = dataclasses.replace(plan, checkpoint_uri=location)
    resume = latest_checkpoint(location) if config.train.resume else None
    if resume is None:
        store.delete(location)
    else:
        log.info("resuming from checkpoint %s/%s", mask_credentials(location), resume[0])
        print(f"[seglib train] resuming from checkpoint {resume[0]} in {mask_credentials(location)}", flush=True)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, resolve_uri(config.storage.cache_dir))
    # Several files per rank so that every shard gets row groups (Petastorm shards by row group).
    train_converter = make_spark_converter(
        training_rows.repartition(config.train.num_proc * 4), dtype="float32"
    )
    validation_converter = (
        make_spark_converter(validation_rows.repartition(config.train.num_proc * 2), dtype="float32")
        if validation_rows is not None
        else None
    )
    version = new_model_version(snapshot, config.train.model)
    log.info(
        "training %s (%s) on %d customers x %d features (%d held out): %d workers, <= %d epochs of %d steps, "
        "batch %d",
        version,
        config.train.model,
        counted,
        plan.spec.input_dim,
        rows - counted,
        config.train.num_proc,
        plan.epochs + plan.idec_epochs,
        plan.steps_per_epoch,
        plan.batch_size,
    )
    started = time.perf_counter()
    make_launcher, rank_function = LAUNCHERS[config.train.launcher]
    launcher = make_launcher(config.train.device)
    try:
        results = launcher.run(
            rank_function,
            (plan, train_converter, validation_converter, resume[1] if resume else None),
            config.train.num_proc,
        )
    except Exception as error:  # a rank died hard (killed, out of memory) rather than reporting back
        killed = " (exit code 137: a worker was killed, by the OS for memory or by the cluster manager)"
        raise TrainingError(
            f"{config.train.launcher} training job failed before every rank reported back: {error}"
            f"{killed if 'Exit code: 137' in str(error) else ''}. "
            f"Look for the first Python traceback in the executor log above. Checkpoints are kept in "
            f"{mask_credentials(location)}; "
            "running `seg train` again resumes from the last one."
        ) from error
    finally:
        train_converter.delete()
        if validation_converter is not None:
            validation_converter.delete()
    raise_rank_failures(results)
    chief = next(result for result in results if result.rank == 0)
    assert chief.model_payload is not None, "rank 0 returned no model"
    # Once per epoch on the console: the ranks' live lines where the launcher relays them, else here.
    shown_live = config.train.progress and launcher.relays_rank_output
    for epoch in chief.history:
        log.log(
            logging.DEBUG if shown_live else logging.INFO,
            "epoch %(epoch)3d %(phase)s loss %(loss).5f %(rows_per_second).0f rows/s",
            epoch,
        )
    uri = join_uri(models_root(config), version)
    fs.write_bytes(spark, join_uri(uri, "model.pt"), chief.model_payload)
    model_metadata = {
        "version": version,
        "model": config.train.model,
        "snapshot_date": snapshot.isoformat(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        "training_seconds": time.perf_counter() - started,
        "rows": rows,
        "training_rows": counted,
        "validation_rows": rows - counted,
        "workers": config.train.num_proc,
        "launcher": config.train.launcher,
        "device": chief.device,
        "precision": chief.precision,
        "resumed_from_epoch": chief.resumed_from_epoch,
        "plan": asdict(plan),
        "feature_slots": metadata.vector_slots,
        "preprocessing": {
            "version": preprocessing_version,
            "uri": preprocessing_uri(config, preprocessing_version),
            "categories": metadata.categories,
            "fitted_snapshot": metadata.fitted_snapshot,
        },
        "history": chief.history,
    }
    metadata_text = json.dumps(model_metadata, indent=2)
    fs.write_text(spark, join_uri(uri, "metadata.json"), metadata_text)
    fs.write_text(spark, join_uri(models_root(config), snapshot_pointer(snapshot)), version)
    fs.write_text(spark, join_uri(models_root(config), LATEST_POINTER), version)
    store.delete(location)
    if config.train.mlflow.enabled:
        track_with_mlflow(config, model_metadata, chief.model_payload, metadata_text)
    return TrainedModel(
        version=version,
        uri=uri,
        history=chief.history,
        rows=rows,
        resumed_from_epoch=chief.resumed_from_epoch,
        precision=chief.precision,
    )


def mlflow_locations(config: SeglibConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact root for a new experiment). Without a configured URI: MLFLOW_TRACKING_URI
    when set (Databricks sets it), else a SQLite store and an artifact folder beside the local models."""
    settings = config.train.mlflow
    if settings.tracking_uri:
        return settings.tracking_uri, None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], None
    models = resolve_uri(config.storage.model_dir)
    if not models.startswith("file:"):
        raise TrainingError(
            f"train.mlflow.tracking_uri is not set and storage.model_dir ({models}) is not local: set "
            "train.mlflow.tracking_uri (for example databricks, or http://your-mlflow-server:5000)"
        )
    folder = local_path(models)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", join_uri(models, "mlartifacts")


def track_with_mlflow(
    config: SeglibConfig, metadata: dict[str, Any], payload: bytes, metadata_text: str
) -> str:
    """One MLflow run per trained model: the plan as parameters, the epoch history as metrics, the model
    directory as artifacts. Returns the run id.

    Through a client bound to this configuration's store, never `mlflow.set_tracking_uri`: that also
    sets MLFLOW_TRACKING_URI for the whole process, so a second training in the same process (another
    model_dir, a notebook) would log into the first one's store.
    """
    import tempfile

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    settings = config.train.mlflow
    tracking_uri, artifact_root = mlflow_locations(config)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(settings.experiment, artifact_location=artifact_root)
    )
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


def read_model_payload(spark: SparkSession, config: SeglibConfig, version: str) -> bytes:
    return fs.read_bytes(spark, join_uri(models_root(config), version, "model.pt"))
