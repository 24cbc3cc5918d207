"""Both training launchers on real Spark tasks, and how rank failures reach the driver."""

from __future__ import annotations

import dataclasses
import json

import pytest

from seglib.embed import embed
from seglib.errors import TrainingError
from seglib.features import FEATURES_TABLE, features, load_feature_metadata
from seglib.generate import generate
from seglib.paths import resolve_uri
from seglib.train import HorovodSparkLauncher, plan_training, raise_rank_failures, train
from seglib.training import train_rank
from tests.conftest import suite_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    config = suite_config(root, "seg_training", "generate.customers=400", "train.epochs=4")
    generate(spark, config)
    features(spark, config)
    return config, root


def test_torch_distributor_launcher_trains_and_the_model_embeds_everyone(spark, prepared):
    config, root = prepared
    config = config.model_copy(
        update={"train": config.train.model_copy(update={"launcher": "torch_distributor"})}
    )
    trained = train(spark, config)
    metadata = json.loads((root / "models" / "autoencoder" / trained.version / "metadata.json").read_text())
    assert metadata["launcher"] == "torch_distributor"
    assert [epoch["epoch"] for epoch in trained.history] == [1, 2, 3, 4]
    assert trained.history[-1]["loss"] < trained.history[0]["loss"]
    assert embed(spark, config) == trained.version
    embeddings = spark.table(f"{config.storage.database}.customer_embeddings")
    assert embeddings.count() == spark.table(f"{config.storage.database}.{FEATURES_TABLE}").count()
    assert {len(row[0]) for row in embeddings.select("embedding").collect()} == {config.train.embedding_dim}


def test_an_exception_on_the_ranks_reaches_the_driver_with_their_tracebacks(spark, prepared):
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    config, _ = prepared
    dimension = load_feature_metadata(spark, config).dimension
    wrong = dataclasses.replace(plan_training(config, dimension, 400), input_dim=dimension + 1, epochs=1)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, resolve_uri(config.storage.cache_dir))
    table = spark.table(f"{config.storage.database}.{FEATURES_TABLE}").select("features").repartition(4)
    converter = make_spark_converter(table, dtype="float32")
    try:
        results = HorovodSparkLauncher().run(train_rank, (wrong, converter), 2)
    finally:
        converter.delete()
    with pytest.raises(TrainingError, match=r"training failed on 2 of 2 ranks") as failure:
        raise_rank_failures(results)
    message = str(failure.value)
    assert "--- rank 0 of 2 ---" in message and "--- rank 1 of 2 ---" in message
    assert "mat1 and mat2 shapes cannot be multiplied" in message
