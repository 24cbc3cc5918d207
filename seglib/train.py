"""Driver side of training: Petastorm converter, Horovod launch on Spark executors, model artefacts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

from pyspark.sql import SparkSession

from seglib import fs
from seglib.config import SeglibConfig
from seglib.errors import TrainingError
from seglib.features import FEATURE_VECTOR_COLUMN, FEATURES_TABLE, load_feature_metadata
from seglib.paths import join_uri, resolve_uri
from seglib.training import RankResult, TrainingPlan, train_rank, train_rank_torch_distributed
from seglib.warehouse import Warehouse

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT")
LATEST_POINTER = "LATEST"


class Launcher(Protocol):
    """Runs a function on N workers and returns one result per worker (rank order)."""

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]: ...


class HorovodSparkLauncher:
    """`horovod.spark.run`: one Spark task per rank, Gloo between them."""

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]:
        import horovod.spark

        # Petastorm 0.12 on pyarrow 14 warns on every read (legacy dataset API, see STACK.md).
        env = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}
        return list(
            horovod.spark.run(fn, args=tuple(args), num_proc=num_proc, use_gloo=True, verbose=1, env=env)
        )


class TorchDistributorLauncher:
    """`pyspark.ml.torch.distributor.TorchDistributor`: Spark's own launcher (barrier tasks,
    torch.distributed over Gloo), the path Databricks recommends on runtimes without Horovod.
    It returns rank 0's result only."""

    def run(self, fn: Callable[..., ResultT], args: Sequence[Any], num_proc: int) -> list[ResultT]:
        from pyspark.ml.torch.distributor import TorchDistributor

        distributor = TorchDistributor(num_processes=num_proc, local_mode=False, use_gpu=False)
        return [distributor.run(fn, *args)]  # type: ignore[list-item]


LAUNCHERS: dict[str, tuple[Callable[[], Launcher], Callable[..., RankResult]]] = {
    "horovod": (HorovodSparkLauncher, train_rank),
    "torch_distributor": (TorchDistributorLauncher, train_rank_torch_distributed),
}


@dataclass(frozen=True)
class TrainedModel:
    version: str
    uri: str
    history: list[dict[str, float]]
    rows: int


def models_root(config: SeglibConfig) -> str:
    return join_uri(resolve_uri(config.storage.model_dir), "autoencoder")


def new_model_version(snapshot: dt.date) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"ae-{snapshot:%Y%m%d}-{stamp}"


def latest_model_version(spark: SparkSession, config: SeglibConfig) -> str:
    pointer = join_uri(models_root(config), LATEST_POINTER)
    if not fs.exists(spark, pointer):
        raise TrainingError(f"no trained model under {models_root(config)}; run `seg train` first")
    return fs.read_text(spark, pointer).strip()


def plan_training(config: SeglibConfig, input_dim: int, rows: int) -> TrainingPlan:
    settings = config.train
    # Each rank takes this many steps per epoch; together they see about every row once.
    steps = max(1, math.ceil(rows / (settings.batch_size * settings.num_proc)))
    return TrainingPlan(
        input_dim=input_dim,
        hidden_dims=tuple(settings.hidden_dims),
        embedding_dim=settings.embedding_dim,
        dropout=settings.dropout,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        steps_per_epoch=steps,
        feature_column=FEATURE_VECTOR_COLUMN,
        reader_workers=settings.reader_workers,
    )


def raise_rank_failures(results: list[RankResult]) -> None:
    failed = [result for result in results if result.error]
    if failed:
        details = "\n".join(
            f"--- rank {result.rank} of {result.size} ---\n{result.error}" for result in failed
        )
        raise TrainingError(f"training failed on {len(failed)} of {len(results)} ranks:\n{details}")


def train(spark: SparkSession, config: SeglibConfig) -> TrainedModel:
    """Train the autoencoder on the snapshot's scaled features on Spark executors (Horovod by default),
    every rank reading its shard through Petastorm."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    snapshot = config.features.snapshot_date
    metadata = load_feature_metadata(spark, config)
    warehouse = Warehouse.from_config(spark, config)
    features = warehouse.read_snapshot(config.storage.database, FEATURES_TABLE, snapshot).select(
        FEATURE_VECTOR_COLUMN
    )
    rows = features.count()
    plan = plan_training(config, metadata.dimension, rows)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, resolve_uri(config.storage.cache_dir))
    # Several files per rank so that every shard gets row groups (Petastorm shards by row group).
    shards = features.repartition(max(config.train.num_proc * 4, 1))
    converter = make_spark_converter(shards, dtype="float32")
    version = new_model_version(snapshot)
    log.info(
        "training %s on %d customers x %d features: %d workers, %d epochs of %d steps, batch %d",
        version,
        rows,
        plan.input_dim,
        config.train.num_proc,
        plan.epochs,
        plan.steps_per_epoch,
        plan.batch_size,
    )
    started = time.perf_counter()
    try:
        make_launcher, rank_function = LAUNCHERS[config.train.launcher]
        results = make_launcher().run(rank_function, (plan, converter), config.train.num_proc)
    except Exception as error:  # a rank died hard (killed, out of memory) rather than reporting back
        raise TrainingError(
            f"{config.train.launcher} training job failed before every rank reported back: {error}. "
            "Look for the first Python traceback in the executor log above."
        ) from error
    finally:
        converter.delete()
    raise_rank_failures(results)
    chief = next(result for result in results if result.rank == 0)
    assert chief.model_payload is not None, "rank 0 returned no model"
    for epoch in chief.history:
        log.info(
            "epoch %3d  loss %.5f  %.0f rows/s  %.1fs",
            epoch["epoch"],
            epoch["loss"],
            epoch["rows_per_second"],
            epoch["seconds"],
        )
    uri = join_uri(models_root(config), version)
    fs.write_bytes(spark, join_uri(uri, "model.pt"), chief.model_payload)
    model_metadata = {
        "version": version,
        "snapshot_date": snapshot.isoformat(),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        "training_seconds": time.perf_counter() - started,
        "rows": rows,
        "workers": config.train.num_proc,
        "launcher": config.train.launcher,
        "plan": asdict(plan),
        "feature_slots": metadata.vector_slots,
        "preprocessing": {"categories": metadata.categories, "fitted_snapshot": metadata.fitted_snapshot},
        "history": chief.history,
    }
    fs.write_text(spark, join_uri(uri, "metadata.json"), json.dumps(model_metadata, indent=2))
    fs.write_text(spark, join_uri(models_root(config), LATEST_POINTER), version)
    return TrainedModel(version=version, uri=uri, history=chief.history, rows=rows)


def read_model_payload(spark: SparkSession, config: SeglibConfig, version: str) -> bytes:
    return fs.read_bytes(spark, join_uri(models_root(config), version, "model.pt"))
