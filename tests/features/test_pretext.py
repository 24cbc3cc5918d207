"""The temporal pretext task of train.forecast: earlier features exactly as a snapshot at the cut-off
would have them, the window's behaviour as standardized targets, and nothing from after the snapshot."""

from __future__ import annotations

import datetime as dt
import logging
import math

import numpy as np
import pytest
from pyspark.sql import DataFrame

from seglib.contract.errors import UnsafeWriteError
from seglib.contract.tables import FEATURE_VECTOR_COLUMN, PRETEXT_INPUT_COLUMN, PRETEXT_TARGET_COLUMN
from seglib.features.stage import features
from seglib.platform.warehouse import Warehouse
from seglib.representation.stage import forecast_rows
from tests.conftest import suite_config

SNAPSHOT = dt.date(2025, 6, 30)
CUTOFF = dt.date(2025, 5, 31)  # the snapshot minus a 30-day window


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def purchases(spark) -> DataFrame:
    return spark.createDataFrame(
        [
            ("a", ts("2025-05-10 10:00:00"), 100.0, "o1", "books"),  # before the cut-off
            ("a", ts("2025-06-05 10:00:00"), 40.0, "o2", "books"),  # in the window
            ("a", ts("2025-06-20 10:00:00"), 60.0, "o3", "toys"),  # in the window
            ("b", ts("2025-04-01 10:00:00"), 50.0, "o4", "books"),  # before the cut-off only
            ("c", ts("2025-06-10 10:00:00"), 30.0, "o5", "toys"),  # first seen in the window
            ("d", ts("2025-05-31 23:00:00"), 80.0, "o6", "books"),  # on the cut-off day: before it
            ("d", ts("2025-06-15 10:00:00"), 20.0, "o7", "toys"),  # in the window
            ("d", ts("2025-07-02 10:00:00"), 999.0, "o8", "books"),  # after the snapshot
        ],
        "customer_id string, purchase_ts timestamp, amount double, order_id string, category string",
    )


def config_of(tmp_path, name: str, *overrides: str):
    return suite_config(
        tmp_path,
        name,
        f"features.snapshot_date={SNAPSHOT}",
        "features.windows_days=[30]",
        "features.trend_window_days=30",
        "input.transactions.columns.timestamp=purchase_ts",
        "input.transactions.columns.transaction_id=null",
        "input.transactions.columns.quantity=null",
        "input.transactions.columns.channel=null",
        "input.transactions.columns.discount=null",
        "input.transactions.columns.is_return=null",
        "input.customers=null",
        "input.events=null",
        "clv.enabled=false",
        *overrides,
    )


def standardized(values: list[float | None], share: float) -> list[float]:
    """What the stage should write: z-scores over the defined values, undefined at 0, times `share`."""
    defined = np.array([value for value in values if value is not None])
    mean, sd = defined.mean(), defined.std()
    return [0.0 if value is None else (value - mean) / sd * share for value in values]


def test_pretext_pairs_hold_the_cutoff_features_and_the_window_behaviour(spark, purchases, tmp_path):
    config = config_of(tmp_path, "seg_pretext", "train.forecast.window_days=30")

    result = features(spark, config, frames={"transactions": purchases})

    assert result.pretext is not None and result.pretext.cutoff == CUTOFF and result.pretext.customers == 3
    pairs = {
        row["customer_id"]: row
        for row in spark.table("seg_pretext.forecast_pretext")
        .where(f"snapshot_date = '{SNAPSHOT}'")
        .collect()
    }
    assert sorted(pairs) == ["a", "b", "d"]  # c was not seen by the cut-off
    # The earlier inputs are exactly the features a snapshot at the cut-off gets from the same pipeline.
    version = result.metadata.version
    at_cutoff = config.model_copy(
        update={"features": config.features.model_copy(update={"snapshot_date": CUTOFF})}
    )
    features(spark, at_cutoff, preprocessing_version=version, frames={"transactions": purchases})
    cutoff_rows = spark.table("seg_pretext.customer_features").where(f"snapshot_date = '{CUTOFF}'").collect()
    cutoff_vectors = {row["customer_id"]: row[FEATURE_VECTOR_COLUMN] for row in cutoff_rows}
    for customer in pairs:
        assert pairs[customer][PRETEXT_INPUT_COLUMN] == pytest.approx(cutoff_vectors[customer], abs=1e-6)
    # a bought twice in the window (100 in all, 40% books), d once (20 on toys; its later 999 is after
    # the snapshot and its 80 falls on the cut-off day), b not at all: its mix is undefined.
    names = result.pretext.targets
    assert names[:3] == ["log_spend", "log_orders", "bought"]
    assert sorted(names[3:]) == ["category_share:books", "category_share:toys"]
    order = ["a", "b", "d"]
    # Two families (activity, category): each member's z-score scaled by 1/sqrt(members x families).
    activity, mix = 1 / math.sqrt(3 * 2), 1 / math.sqrt(2 * 2)
    raw = {
        "log_spend": [math.log1p(100.0), 0.0, math.log1p(20.0)],
        "log_orders": [math.log1p(2.0), 0.0, math.log1p(1.0)],
        "bought": [1.0, 0.0, 1.0],
        "category_share:books": [0.4, None, 0.0],
        "category_share:toys": [0.6, None, 1.0],
    }
    for position, name in enumerate(names):
        expected = standardized(raw[name], activity if position < 3 else mix)
        written = [pairs[customer][PRETEXT_TARGET_COLUMN][position] for customer in order]
        assert written == pytest.approx(expected, abs=1e-5), name


def test_turning_the_forecast_off_empties_the_snapshots_pairs(spark, purchases, tmp_path):
    config = config_of(tmp_path, "seg_pretext_off", "train.forecast.window_days=30")
    features(spark, config, frames={"transactions": purchases})
    assert spark.table("seg_pretext_off.forecast_pretext").count() == 3

    off = config.model_copy(
        update={
            "train": config.train.model_copy(
                update={"forecast": config.train.forecast.model_copy(update={"window_days": 0})}
            )
        }
    )
    result = features(spark, off, frames={"transactions": purchases})

    assert result.pretext is None
    assert spark.table("seg_pretext_off.forecast_pretext").count() == 0


def test_a_window_longer_than_the_history_leaves_training_to_the_reconstruction_and_says_so(
    spark, purchases, tmp_path, caplog
):
    config = config_of(tmp_path, "seg_pretext_long", "train.forecast.window_days=365")

    with caplog.at_level(logging.WARNING, logger="seglib.features.pretext"):
        result = features(spark, config, frames={"transactions": purchases})

    assert result.pretext is not None and result.pretext.customers == 0
    assert spark.table("seg_pretext_long.forecast_pretext").count() == 0
    assert "train.forecast.window_days=365" in caplog.text and "cut-off 2024-06-30" in caplog.text
    packed, targets = forecast_rows(
        Warehouse.from_config(spark, config), config, spark.table("seg_pretext_long.customer_features"), 4
    )
    assert packed is None and targets == 0


def test_a_pretext_table_seglib_did_not_create_is_never_written(spark, purchases, tmp_path):
    config = config_of(tmp_path, "seg_pretext_theirs", "train.forecast.window_days=30")
    theirs = tmp_path / "their_pretext"
    spark.createDataFrame([("x", 1.0)], "customer_id string, value double").write.parquet(str(theirs))
    spark.sql("CREATE DATABASE IF NOT EXISTS seg_pretext_theirs")
    spark.sql(f"CREATE TABLE seg_pretext_theirs.forecast_pretext USING parquet LOCATION '{theirs}'")

    with pytest.raises(UnsafeWriteError, match="that seglib did not create"):
        features(spark, config, frames={"transactions": purchases})

    assert [tuple(row) for row in spark.read.parquet(str(theirs)).collect()] == [("x", 1.0)]
