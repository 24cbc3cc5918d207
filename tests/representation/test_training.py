"""Distributed training on real Spark tasks: both launchers, equal steps on uneven shards, early
stopping agreed by every rank, one versus two processes, a killed worker and the resumed run, the
model variants, MLflow tracking, and how rank failures reach the driver."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import re
import signal
import threading
import time

import mlflow
import numpy as np
import pytest
import torch
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

from seglib.contract.artifacts import Artifacts
from seglib.contract.config import ForecastConfig, MlflowConfig
from seglib.contract.errors import TrainingError
from seglib.contract.tables import FEATURES_TABLE, PRETEXT_INPUT_COLUMN, PRETEXT_TABLE, PRETEXT_TARGET_COLUMN
from seglib.contract.uris import join_uri, resolve_uri
from seglib.features.stage import features, load_feature_metadata
from seglib.platform.files import FsspecFiles
from seglib.platform.warehouse import Warehouse
from seglib.representation.embedding import embed
from seglib.representation.launchers import HorovodSparkLauncher
from seglib.representation.model_store import read_model_metadata, read_model_payload
from seglib.representation.models import AutoencoderSpec, deserialize
from seglib.representation.rank_loop import TrainingPlan, choose_precision, train_rank
from seglib.representation.stage import (
    checkpoint_location,
    forecast_rows,
    model_members,
    plan_training,
    raise_rank_failures,
    train,
)
from seglib.synthetic.generator import generate
from tests.conftest import horovod_ranks, suite_config

pytestmark = pytest.mark.slow
# About this file's wall time beside the other test worker: the longest files start first (conftest).
FILE_SECONDS = 300


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    config = suite_config(
        root, "seg_training", "generate.customers=400", "train.epochs=20", "train.warmup_epochs=1",
        # What this file tests happens between ranks: two of them, however few the customers.
        "train.min_rows_per_worker=0",
    )  # fmt: skip
    generate(spark, config)
    features(spark, config)
    return config, root


def with_train(config, **settings):
    return config.model_copy(update={"train": config.train.model_copy(update=settings)})


def converter_of(spark, config, frame):
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, resolve_uri(config.storage.cache_dir))
    return make_spark_converter(frame, dtype="float32")


def host_cores() -> int:
    return len(os.sched_getaffinity(0))


def validation_losses(history):
    return [epoch["validation_loss"] for epoch in history]


@pytest.fixture(scope="module")
def two_process_run(spark, prepared):
    config, _ = prepared
    return train(spark, config)


def epoch_log_lines(caplog, epoch: int) -> list[str]:
    """The driver's INFO log lines about one epoch."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.INFO and re.search(rf"\bepoch +{epoch}\b", record.getMessage())
    ]


def test_two_processes_follow_the_loss_curve_of_one_process(spark, prepared, two_process_run, caplog):
    config, root = prepared
    with caplog.at_level(logging.INFO, logger="seglib"):
        single = train(spark, with_train(config, num_proc=1))
    # Horovod relays rank 0's live line per epoch to the driver's console: the driver does not repeat it.
    assert not epoch_log_lines(caplog, 1)
    one, two = validation_losses(single.history), validation_losses(two_process_run.history)
    assert len(one) == len(two) == config.train.epochs
    # Both learn and fall together epoch by epoch. Two workers take half the steps at twice the rate,
    # which Adam does not fully make up for this early: their loss stays within a quarter of one's.
    assert one[-1] < 0.7 * one[0] and two[-1] < 0.7 * two[0]
    assert abs(two[-1] / one[-1] - 1) < 0.25
    assert np.corrcoef(one, two)[0, 1] > 0.95
    metadata = json.loads(
        (root / "models" / "autoencoder" / two_process_run.version / "metadata.json").read_text()
    )
    assert metadata["workers"] == 2 and metadata["validation_rows"] > 0
    # Both ranks run on this host; at 64 rows per step each computes on one thread (rank_threads).
    assert metadata["ranks_on_host"] == 2 and metadata["threads_per_rank"] == 1
    assert metadata["training_rows"] + metadata["validation_rows"] == 400
    assert [epoch["epoch"] for epoch in metadata["history"]] == list(range(1, config.train.epochs + 1))
    # The learning rate warms up from the per-worker rate to rate x workers in the first epoch.
    rates = [epoch["learning_rate"] for epoch in metadata["history"]]
    assert rates[0] < 2 * config.train.learning_rate and rates[-1] == pytest.approx(
        2 * config.train.learning_rate
    )


def test_uneven_shards_take_equal_steps_and_every_rank_stops_at_the_same_epoch(spark, prepared):
    config, _ = prepared
    dimension = 6
    rng = np.random.default_rng(3)

    def part(rows):
        values = [(Vectors.dense(rng.normal(size=dimension).tolist()),) for _ in range(rows)]
        return spark.createDataFrame(values, ["features"]).coalesce(1)

    # Three Parquet files of 300, 20 and 20 rows: Petastorm deals the row groups out, so one rank reads
    # the 300-row file (and maybe a 20-row one) and the other 20 or 40 rows.
    uneven = part(300).union(part(20)).union(part(20))
    assert uneven.rdd.getNumPartitions() == 3
    held_out = part(40).union(part(40))
    plan = TrainingPlan(
        spec=AutoencoderSpec(input_dim=dimension, hidden_dims=(8,), embedding_dim=2),
        epochs=30,
        batch_size=16,
        learning_rate=1e-3,
        seed=5,
        steps_per_epoch=math.ceil(340 / (16 * 2)),
        feature_column="features",
        patience=2,
        min_delta=0.5,  # nothing improves by half: early stopping after patience + 1 epochs
        shard_cache_bytes=4096,  # the small shard fits in memory, the large one streams
        progress=False,
    )
    training, validation = converter_of(spark, config, uneven), converter_of(spark, config, held_out)
    try:
        results = HorovodSparkLauncher().run(train_rank, (plan, training, validation, None), 2)
    finally:
        training.delete()
        validation.delete()
    raise_rank_failures(results)
    by_rank = {result.rank: result for result in results}
    assert {result.in_memory for result in results} == {True, False}
    assert [result.shard_rows for result in results if result.in_memory] in ([20], [40])
    assert [len(result.history) for result in results] == [plan.patience + 1] * 2
    assert [result.steps for result in results] == [(plan.patience + 1) * plan.steps_per_epoch] * 2
    assert validation_losses(by_rank[0].history) == validation_losses(by_rank[1].history)


def rank_processes():
    return [(process.environ().get("HOROVOD_RANK"), process) for process in horovod_ranks()]


def test_a_killed_worker_fails_the_run_clearly_and_the_next_run_resumes_from_its_checkpoint(
    spark, prepared, two_process_run
):
    config, _ = prepared
    # Small batches and no early stopping make the run long enough to be killed half-way. float16 with
    # loss scaling (what older GPUs get) runs here on CPUs too: the scaler's state must survive a resume.
    config = with_train(config, batch_size=4, epochs=24, patience=100, precision="float16")
    dimension = load_feature_metadata(spark, Artifacts.from_config(config)).dimension
    features_table = spark.table(f"{config.storage.database}.{FEATURES_TABLE}")
    _, targets = forecast_rows(Warehouse.from_config(spark, config), config, features_table, dimension)
    assert targets > 0  # the default forecast task rides in the rows that are checkpointed and resumed
    plan = plan_training(config, dimension, 360, targets)
    location = checkpoint_location(
        Artifacts.from_config(config),
        config.features.snapshot_date,
        plan,
        load_feature_metadata(spark, Artifacts.from_config(config)).version,
    )
    killed: list[str] = []

    def kill_rank_one_after_the_third_checkpoint():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            names = [name for name in FsspecFiles().list_names(location) if name.startswith("epoch-")]
            if names and names[-1] >= "epoch-0003.pt":
                for rank, process in rank_processes():
                    if rank == "1":
                        process.send_signal(signal.SIGKILL)
                        killed.append(names[-1])
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_rank_one_after_the_third_checkpoint, daemon=True)
    watcher.start()
    with pytest.raises(
        TrainingError, match=r"(?s)failed before every rank reported back.*killed.*resumes from the last one"
    ):
        train(spark, config)
    watcher.join()
    assert killed, "the watcher never saw a checkpoint to kill after"
    kept = FsspecFiles().list_names(location)
    assert kept and all(name.startswith("epoch-") for name in kept)
    last_epoch = int(kept[-1].removeprefix("epoch-").removesuffix(".pt"))
    assert 3 <= last_epoch < 24
    checkpoint = torch.load(
        io.BytesIO(FsspecFiles().read_bytes(join_uri(location, kept[-1]))), weights_only=True
    )
    assert checkpoint["scaler"]["scale"] > 0 and checkpoint["scaler"]["_growth_tracker"] > 0

    resumed = train(spark, config)
    assert resumed.resumed_from_epoch == last_epoch
    assert resumed.precision == "float16"
    assert [epoch["epoch"] for epoch in resumed.history] == list(range(1, 25))
    assert FsspecFiles().list_names(location) == []  # a finished run leaves no checkpoint to resume
    # Same quality as a run that was never interrupted (more, smaller steps: at least as good).
    assert min(validation_losses(resumed.history)) <= 1.05 * min(validation_losses(two_process_run.history))


def assert_everyone_has_an_embedding(spark, config):
    embeddings = spark.table(f"{config.storage.database}.customer_embeddings")
    assert embeddings.count() == 400
    lengths = embeddings.select(F.size("embedding").alias("width")).distinct().collect()
    # Each member's embedding side by side (the idec test trains one member, the others four).
    assert [row.width for row in lengths] == [config.train.embedding_dim * model_members(config.train)]
    values = np.array([row.embedding for row in embeddings.select("embedding").collect()])
    assert np.isfinite(values).all() and values.std(axis=0).min() > 0


def test_idec_with_the_forecast_task_pretrains_then_clusters_and_embeds_everyone(spark, prepared):
    config, _ = prepared
    config = with_train(config, model="idec")
    config = config.model_copy(
        update={
            "train": config.train.model_copy(
                update={
                    "idec": config.train.idec.model_copy(update={"epochs": 4, "clusters": 4}),
                    "forecast": ForecastConfig(window_days=90, weight=1.0),
                }
            )
        }
    )
    pretext = features(spark, config).pretext
    assert pretext is not None and pretext.customers > 300

    trained = train(spark, config)

    phases = [epoch["phase"] for epoch in trained.history]
    assert phases == ["pretrain"] * 20 + ["idec"] * (len(phases) - 20) and len(phases) > 20
    changes = [epoch["assignment_change"] for epoch in trained.history[20:]]
    assert changes[0] == 1.0 and all(0 <= change <= 1 for change in changes)
    assert trained.version.startswith("idec-")
    # The head learnt the last 90 days from the customers' features at the start of them: its
    # predictions explain a good share of the (standardized) targets' variance.
    artifacts = Artifacts.from_config(config)
    model = deserialize(read_model_payload(spark, artifacts, trained.version))
    assert model.spec.forecast_targets == len(pretext.targets)
    assert read_model_metadata(spark, artifacts, trained.version)["forecast"]["window_days"] == 90
    pairs = spark.table(f"{config.storage.database}.{PRETEXT_TABLE}").collect()
    earlier = torch.tensor([row[PRETEXT_INPUT_COLUMN] for row in pairs])
    targets = torch.tensor([row[PRETEXT_TARGET_COLUMN] for row in pairs])
    with torch.no_grad():
        residual = ((model.forecast_head(model.encode(earlier)) - targets) ** 2).sum()
    assert float(residual / (targets**2).sum()) < 0.8
    assert embed(spark, config) == trained.version
    assert_everyone_has_an_embedding(spark, config)


def test_torch_distributor_launcher_trains_a_vae_tracks_it_in_mlflow_and_embeds(spark, prepared, caplog):
    config, root = prepared
    # Steps of 2,048 rows, where CPU ranks split the host's cores between them.
    config = with_train(config, launcher="torch_distributor", model="vae", epochs=4, batch_size=2048)
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"mlflow": MlflowConfig(enabled=True)})}
    )
    with caplog.at_level(logging.INFO, logger="seglib"):
        trained = train(spark, config)
    # TorchDistributor leaves rank output in the executors' logs: the driver logs each epoch once.
    assert [len(epoch_log_lines(caplog, epoch)) for epoch in (1, 2, 3, 4)] == [1, 1, 1, 1]
    metadata = json.loads((root / "models" / "autoencoder" / trained.version / "metadata.json").read_text())
    assert metadata["launcher"] == "torch_distributor" and metadata["model"] == "vae"
    # One torchrun per Spark task, each a local world of one, yet both ranks know they share the host
    # and split its cores.
    assert metadata["ranks_on_host"] == 2 and metadata["threads_per_rank"] == max(1, host_cores() // 2)
    assert trained.version.startswith("vae-")
    assert [epoch["epoch"] for epoch in trained.history] == [1, 2, 3, 4]
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]
    assert embed(spark, config) == trained.version
    assert_everyone_has_an_embedding(spark, config)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'models' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("seglib").experiment_id])
    run = next(run for run in runs if run.data.tags.get("seglib.model_version") == trained.version)
    history = client.get_metric_history(run.info.run_id, "validation_loss")
    assert [metric.value for metric in history] == pytest.approx(validation_losses(trained.history))
    assert run.data.params["launcher"] == "torch_distributor"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model.pt", "model/metadata.json"}


def test_an_exception_on_the_ranks_reaches_the_driver_with_their_tracebacks(spark, prepared):
    config, _ = prepared
    dimension = load_feature_metadata(spark, Artifacts.from_config(config)).dimension
    plan = plan_training(config, dimension, 400)
    wrong = dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, input_dim=dimension + 1), epochs=1)
    table = spark.table(f"{config.storage.database}.{FEATURES_TABLE}").select("features").repartition(4)
    converter = converter_of(spark, config, table)
    try:
        results = HorovodSparkLauncher().run(train_rank, (wrong, converter, None, None), 2)
    finally:
        converter.delete()
    with pytest.raises(TrainingError, match=r"training failed on 2 of 2 ranks") as failure:
        raise_rank_failures(results)
    message = str(failure.value)
    assert "--- rank 0 of 2 ---" in message and "--- rank 1 of 2 ---" in message
    assert "mat1 and mat2 shapes cannot be multiplied" in message


def test_a_non_finite_loss_stops_training_and_names_the_likely_cause(spark, prepared, monkeypatch):
    from seglib.representation.rank_loop import train_rank_torch_distributed

    config, _ = prepared
    dimension = load_feature_metadata(spark, Artifacts.from_config(config)).dimension
    exploding = dataclasses.replace(plan_training(config, dimension, 400), learning_rate=1e30, epochs=3)
    # A world of one, in this process: the same torch.distributed path TorchDistributor starts.
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29_500 + os.getpid() % 1000))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    table = spark.table(f"{config.storage.database}.{FEATURES_TABLE}").select("features").repartition(2)
    converter = converter_of(spark, config, table)
    try:
        result = train_rank_torch_distributed(exploding, converter, None, None)
    finally:
        converter.delete()
    assert result.error is not None and "FloatingPointError: training loss became" in result.error
    assert "lower train.learning_rate, now 1e+30" in result.error


def test_mixed_precision_follows_the_device():
    assert choose_precision("auto", "cuda", bfloat16_supported=True) == "bfloat16"
    assert choose_precision("auto", "cuda", bfloat16_supported=False) == "float16"  # T4, V100: loss-scaled
    assert choose_precision("auto", "cpu", bfloat16_supported=False) == "float32"
    assert choose_precision("float32", "cuda", bfloat16_supported=True) == "float32"


def test_the_replaced_mixed_precision_key_names_its_successor():
    from seglib.contract.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"train\.mixed_precision was replaced by train\.precision"):
        load_config(None, ["train.mixed_precision=true"])
