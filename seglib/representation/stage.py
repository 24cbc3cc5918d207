"""The `train` stage (driver side): the snapshot's scaled features through Petastorm converters to the
ranks on Spark executors (Horovod by default), checkpoints, and the published model."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts, new_model_version
from seglib.contract.config import SeglibConfig, TrainConfig
from seglib.contract.errors import ConfigError, TrainingError
from seglib.contract.tables import (
    FEATURE_VECTOR_COLUMN,
    FEATURES_TABLE,
    PRETEXT_INPUT_COLUMN,
    PRETEXT_TABLE,
    PRETEXT_TARGET_COLUMN,
)
from seglib.contract.uris import join_uri, mask_credentials
from seglib.features.preprocessing import (
    FeatureMetadata,
    load_feature_metadata,
    snapshot_preprocessing_version,
)
from seglib.platform.files import FsspecFiles
from seglib.platform.warehouse import Warehouse
from seglib.representation.launchers import LAUNCHERS, raise_rank_failures
from seglib.representation.model_store import publish_model
from seglib.representation.models import MODEL_KINDS, AutoencoderSpec
from seglib.representation.rank_loop import RankResult, TrainingPlan
from seglib.representation.tracking import require_tracking, track_with_mlflow

log = logging.getLogger(__name__)


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


# `train.batch_size: auto`: the batch the default learning rate was tuned at, kept while the data is
# small (quality first: many steps per epoch), then grown so that per-step costs (Python, the
# gradient allreduce between ranks) stay small against the step's arithmetic; bench/train_throughput.py.
AUTO_BATCH_REFERENCE = 64
AUTO_BATCH_MAX = 4096
AUTO_BATCH_ROWS_PER_STEP = 256


def auto_batch_size(rows: int) -> int:
    """Rows per worker step for `rows` training rows: 64 below ~23k rows, then rows/256 rounded to a
    power of two (a whole pass takes ~256 steps in total), at most 4096."""
    target = max(1.0, rows / AUTO_BATCH_ROWS_PER_STEP)
    size = 2 ** round(math.log2(target))
    return int(min(AUTO_BATCH_MAX, max(AUTO_BATCH_REFERENCE, size)))


# `train.members: auto` for autoencoder and vae. bench/real_logs.py, four trainings per log compared in
# pairs: k-means on two members side by side agreed between runs at ARI 0.85-0.96 for CDNOW at k 2, 3,
# 5, 7 and 8 (one member: 0.40-0.96) and 0.83 for the Complete Journey at k 2 (0.41-0.55).
AUTO_MEMBERS = 4


def model_members(settings: TrainConfig) -> int:
    """Models trained side by side: as configured, or for `auto` one for idec and AUTO_MEMBERS else."""
    if settings.members != "auto":
        return settings.members
    return 1 if settings.model == "idec" else AUTO_MEMBERS


def batch_and_learning_rate(settings: TrainConfig, rows: int) -> tuple[int, float]:
    """The per-worker batch and base learning rate: as configured, or for `auto` the data's batch with
    the rate scaled by sqrt(batch / 64) (Adam's square-root rule: the gradient noise shrinks with
    sqrt(batch))."""
    if settings.batch_size != "auto":
        return settings.batch_size, settings.learning_rate
    batch = auto_batch_size(rows)
    return batch, settings.learning_rate * math.sqrt(batch / AUTO_BATCH_REFERENCE)


def training_workers(settings: TrainConfig, rows: int) -> int:
    """The ranks that train `rows` customers: `num_proc`, or fewer so that each has at least
    `min_rows_per_worker` of them (at least one). A rank exchanges gradients with the others after every
    step; on small data that exchange outweighs the arithmetic it shares (bench/train_throughput.py)."""
    if settings.min_rows_per_worker == 0:
        return settings.num_proc
    return max(1, min(settings.num_proc, rows // settings.min_rows_per_worker))


def plan_training(
    config: SeglibConfig, input_dim: int, rows: int, forecast_targets: int = 0, workers: int | None = None
) -> TrainingPlan:
    """The plan for `rows` training rows on `workers` ranks (None: `training_workers` of the rows)."""
    settings = config.train
    workers = training_workers(settings, rows) if workers is None else workers
    batch_size, learning_rate = batch_and_learning_rate(settings, rows)
    # Each rank takes this many steps per epoch; together they see about every row once.
    steps = max(1, math.ceil(rows / (batch_size * workers)))
    is_idec = "idec" in MODEL_KINDS[settings.model].phases
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
            forecast_targets=forecast_targets,
            members=model_members(settings),
        ),
        epochs=settings.epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=settings.seed,
        steps_per_epoch=steps,
        feature_column=FEATURE_VECTOR_COLUMN,
        workers=workers,
        warmup_epochs=settings.warmup_epochs,
        patience=settings.patience,
        min_delta=settings.min_delta,
        corruption=settings.corruption,
        vae_beta=settings.vae_beta,
        idec_epochs=settings.idec.epochs if is_idec else 0,
        idec_weight=settings.idec.weight,
        idec_tolerance=settings.idec.tolerance,
        forecast_weight=settings.forecast.weight if forecast_targets else 0.0,
        reader_workers=settings.reader_workers,
        shard_cache_bytes=settings.shard_cache_mib << 20,
        device=settings.device,
        precision=settings.precision,
        progress=settings.progress,
    )


def checkpoint_location(
    artifacts: Artifacts, snapshot: dt.date, plan: TrainingPlan, preprocessing_version: str
) -> str:
    """One folder per (snapshot, preprocessing version, plan): a rerun of the same training finds it, a
    different plan never resumes from it."""
    identity = {k: v for k, v in asdict(plan).items() if k not in {"checkpoint_uri", "progress"}}
    identity.update(snapshot=snapshot.isoformat(), preprocessing=preprocessing_version)
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return artifacts.checkpoints(snapshot, digest)


def latest_checkpoint(location: str) -> tuple[str, bytes] | None:
    files = FsspecFiles()
    names = [name for name in files.list_names(location) if name.startswith("epoch-")]
    if not names:
        return None
    return names[-1], files.read_bytes(join_uri(location, names[-1]))


def split_for_validation(
    features: DataFrame,
    settings: TrainConfig,
    rows: int,
    training_rows: DataFrame | None = None,
    workers: int = 1,
) -> tuple[DataFrame, DataFrame | None]:
    """Hold out a share of customers, chosen by a hash of the id so the split is the same on a rerun.

    The held-out customers' model inputs measure the reconstruction; the training side takes its rows
    from `training_rows` (the same customers' inputs with the forecast task packed after them) when given."""
    training = training_rows if training_rows is not None else features
    fraction = min(settings.validation_fraction, settings.validation_max_rows / max(rows, 1))
    # Too few held-out rows would leave some workers without a Parquet row group to read.
    if fraction * rows < 8 * workers:
        return training.select(FEATURE_VECTOR_COLUMN), None
    bucket = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(settings.seed)), F.lit(100_000))
    held_out = bucket < F.lit(int(fraction * 100_000))
    return (
        training.where(~held_out).select(FEATURE_VECTOR_COLUMN),
        features.where(held_out).select(FEATURE_VECTOR_COLUMN),
    )


def with_forecast_task(
    features: DataFrame, pretext: DataFrame, input_dim: int
) -> tuple[DataFrame | None, int]:
    """Each customer's model inputs followed by the forecast task (`models.training_row_width`): the
    earlier inputs, the window targets and weight 1 for a customer seen by the cut-off; zeros and
    weight 0 for one who arrived after it. Returns the rows and the number of targets; (None, 0) when
    the snapshot has no pairs (no customer seen by the cut-off)."""
    first = pretext.select(F.size(PRETEXT_TARGET_COLUMN).alias("n")).first()
    if first is None:
        return None, 0
    targets = int(first["n"])
    seen = F.col(PRETEXT_TARGET_COLUMN).isNotNull()
    packed = features.join(pretext, "customer_id", "left").select(
        "customer_id",
        F.concat(
            F.col(FEATURE_VECTOR_COLUMN),
            F.coalesce(F.col(PRETEXT_INPUT_COLUMN), F.array_repeat(F.lit(0.0).cast("float"), input_dim)),
            F.coalesce(F.col(PRETEXT_TARGET_COLUMN), F.array_repeat(F.lit(0.0).cast("float"), targets)),
            F.array(F.when(seen, 1.0).otherwise(0.0).cast("float")),
        ).alias(FEATURE_VECTOR_COLUMN),
    )
    return packed, targets


def forecast_rows(
    warehouse: Warehouse, config: SeglibConfig, features: DataFrame, input_dim: int
) -> tuple[DataFrame | None, int]:
    """The training rows with the forecast task (see `with_forecast_task`), or (None, 0) with a warning
    where the features stage wrote no pairs for this snapshot."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    if config.train.forecast.window_days == 0:
        return None, 0
    packed, targets = (
        with_forecast_task(
            features,
            warehouse.snapshot_rows(database, PRETEXT_TABLE, snapshot).select(
                "customer_id", PRETEXT_INPUT_COLUMN, PRETEXT_TARGET_COLUMN
            ),
            input_dim,
        )
        if warehouse.exists(database, PRETEXT_TABLE)
        else (None, 0)
    )
    if packed is None:
        log.warning(
            "train.forecast is on but %s.%s has no pairs for snapshot %s (no customer seen by its cut-off, "
            "or the features were written without it): training on the reconstruction alone; run "
            "`seg features` again with this configuration to train with the forecast task",
            database, PRETEXT_TABLE, snapshot,
        )  # fmt: skip
    return packed, targets


@dataclass(frozen=True)
class _TrainingData:
    """The snapshot's scaled features, split for validation, and the plan that trains on them."""

    training: DataFrame
    validation: DataFrame | None
    rows: int
    training_rows: int
    plan: TrainingPlan
    preprocessing: FeatureMetadata
    input_range: tuple[list[float], list[float]]  # per model input: (lows, highs) over the snapshot


def train(spark: SparkSession, config: SeglibConfig) -> TrainedModel:
    """Train the representation model on the snapshot's scaled features on Spark executors (Horovod by
    default), every rank reading its shard through Petastorm; resumes an interrupted run of the same
    plan from its last epoch checkpoint."""
    snapshot = config.features.snapshot_date
    artifacts = Artifacts.from_config(config)
    if config.train.mlflow.enabled:
        require_tracking(config.train.mlflow, artifacts)
    data = _training_data(spark, config, artifacts)
    location = data.plan.checkpoint_uri
    assert location is not None
    resume = latest_checkpoint(location) if config.train.resume else None
    if resume is None:
        FsspecFiles().delete(location)
    else:
        log.info("resuming from checkpoint %s/%s", mask_credentials(location), resume[0])
        print(
            f"[seglib train] resuming from checkpoint {resume[0]} in {mask_credentials(location)}", flush=True
        )
    version = new_model_version(snapshot, MODEL_KINDS[config.train.model].version_prefix)
    log.info(
        "training %s (%s) on %d customers x %d features (%d held out): %d workers, <= %d epochs of %d steps, "
        "batch %d",
        version, config.train.model, data.training_rows, data.plan.spec.input_dim,
        data.rows - data.training_rows, data.plan.workers, data.plan.epochs + data.plan.idec_epochs,
        data.plan.steps_per_epoch, data.plan.batch_size,
    )  # fmt: skip
    started = time.perf_counter()
    chief, relayed = _run_ranks(spark, config, artifacts, data, resume[1] if resume else None)
    # Once per epoch on the console: the ranks' live lines where the launcher relays them, else here.
    shown_live = config.train.progress and relayed
    for epoch in chief.history:
        log.log(
            logging.DEBUG if shown_live else logging.INFO,
            "epoch %(epoch)3d %(phase)s loss %(loss).5f %(rows_per_second).0f rows/s",
            epoch,
        )
    assert chief.model_payload is not None, "rank 0 returned no model"
    metadata = _model_metadata(config, artifacts, version, data, chief, time.perf_counter() - started)
    metadata_text = json.dumps(metadata, indent=2)
    publish_model(spark, artifacts, version, snapshot, chief.model_payload, metadata_text)
    FsspecFiles().delete(location)
    if config.train.mlflow.enabled:
        track_with_mlflow(config.train.mlflow, artifacts, metadata, chief.model_payload, metadata_text)
    return TrainedModel(
        version=version,
        uri=artifacts.model_folder(version),
        history=chief.history,
        rows=data.rows,
        resumed_from_epoch=chief.resumed_from_epoch,
        precision=chief.precision,
    )


def _training_data(spark: SparkSession, config: SeglibConfig, artifacts: Artifacts) -> _TrainingData:
    snapshot, database = config.features.snapshot_date, config.storage.database
    warehouse = Warehouse.from_config(spark, config)
    snapshot_features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot)
    # The version that scaled this snapshot's rows, not whichever is current now.
    preprocessing_version = snapshot_preprocessing_version(
        snapshot_features, f"{database}.{FEATURES_TABLE}", snapshot
    )
    preprocessing = load_feature_metadata(spark, artifacts, preprocessing_version)
    features = snapshot_features.select("customer_id", FEATURE_VECTOR_COLUMN)
    rows, low, high = input_range(features)
    packed, targets = forecast_rows(warehouse, config, features, preprocessing.dimension)
    workers = training_workers(config.train, rows)
    if workers < config.train.num_proc:
        log.info(
            "training on %d of train.num_proc=%d processes: %d customers, each process needs "
            "train.min_rows_per_worker=%d (set it to 0 to always use num_proc)",
            workers, config.train.num_proc, rows, config.train.min_rows_per_worker,
        )  # fmt: skip
    training, validation = split_for_validation(features, config.train, rows, packed, workers)
    counted = training.count()
    plan = plan_training(config, preprocessing.dimension, counted, targets, workers)
    location = checkpoint_location(artifacts, snapshot, plan, preprocessing_version)
    plan = dataclasses.replace(plan, checkpoint_uri=location)
    return _TrainingData(training, validation, rows, counted, plan, preprocessing, (low, high))


def input_range(features: DataFrame) -> tuple[int, list[float], list[float]]:
    """Rows, and the least and greatest value of every model input over them: the range the encoder is
    trained on, to which later snapshots are clipped before encoding (one pass, a vector summary)."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.ml.stat import Summarizer

    summary = features.select(
        Summarizer.metrics("count", "min", "max")
        .summary(array_to_vector(F.col(FEATURE_VECTOR_COLUMN)))
        .alias("s")
    ).first()
    assert summary is not None
    stats = summary["s"]
    return int(stats["count"]), [float(v) for v in stats["min"]], [float(v) for v in stats["max"]]


def _run_ranks(
    spark: SparkSession, config: SeglibConfig, artifacts: Artifacts, data: _TrainingData, resume: bytes | None
) -> tuple[RankResult, bool]:
    """Run the ranks through Petastorm converters; rank 0's result and whether rank output was relayed."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    settings = config.train
    # Petastorm reads this setting from SparkSession.builder.getOrCreate(), the process's first session,
    # which need not be `spark` (a notebook's second session, the Python API's caller): set it on both.
    for session in (spark, SparkSession.builder.getOrCreate()):
        session.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, artifacts.cache_dir)
    # Several files per rank so that every shard gets row groups (Petastorm shards by row group).
    workers = data.plan.workers
    train_converter = make_spark_converter(data.training.repartition(workers * 4), dtype="float32")
    validation_converter = (
        make_spark_converter(data.validation.repartition(workers * 2), dtype="float32")
        if data.validation is not None
        else None
    )
    make_launcher, rank_function = LAUNCHERS[settings.launcher]
    launcher = make_launcher(settings.device)
    try:
        results = launcher.run(
            rank_function, (data.plan, train_converter, validation_converter, resume), workers
        )
    except Exception as error:  # a rank died hard (killed, out of memory) rather than reporting back
        killed = " (exit code 137: a worker was killed, by the OS for memory or by the cluster manager)"
        raise TrainingError(
            f"{settings.launcher} training job failed before every rank reported back: {error}"
            f"{killed if 'Exit code: 137' in str(error) else ''}. "
            f"Look for the first Python traceback in the executor log above. Checkpoints are kept in "
            f"{mask_credentials(data.plan.checkpoint_uri or '')}; "
            "running `seg train` again resumes from the last one."
        ) from error
    finally:
        train_converter.delete()
        if validation_converter is not None:
            validation_converter.delete()
    raise_rank_failures(results)
    return next(result for result in results if result.rank == 0), launcher.relays_rank_output


def _model_metadata(
    config: SeglibConfig,
    artifacts: Artifacts,
    version: str,
    data: _TrainingData,
    chief: RankResult,
    seconds: float,
) -> dict[str, Any]:
    preprocessing = data.preprocessing
    return {
        "version": version,
        "model": config.train.model,
        "snapshot_date": config.features.snapshot_date.isoformat(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        "training_seconds": seconds,
        "rows": data.rows,
        "training_rows": data.training_rows,
        "validation_rows": data.rows - data.training_rows,
        "workers": data.plan.workers,
        "launcher": config.train.launcher,
        "device": chief.device,
        "precision": chief.precision,
        "ranks_on_host": chief.ranks_on_host,
        "threads_per_rank": chief.threads,
        "resumed_from_epoch": chief.resumed_from_epoch,
        "plan": asdict(data.plan),
        "feature_slots": preprocessing.vector_slots,
        "input_range": {"low": data.input_range[0], "high": data.input_range[1]},
        "forecast": {
            "window_days": config.train.forecast.window_days,
            "weight": config.train.forecast.weight,
            "targets": data.plan.spec.forecast_targets,
        },
        "preprocessing": {
            "version": preprocessing.version,
            "uri": artifacts.preprocessing_folder(preprocessing.version),
            "categories": preprocessing.categories,
            "fitted_snapshot": preprocessing.fitted_snapshot,
        },
        "history": chief.history,
    }
