"""Progress lines of long pipeline stages (the training prints its own line per epoch)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pandas as pd

from seglib.platform.progress import stage_progress


def _slow_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        time.sleep(1.0)
        yield batch


def test_a_long_stage_reports_its_spark_stages_tasks_and_an_estimate(spark, caplog):
    frame = spark.range(6, numPartitions=6).mapInPandas(_slow_partition, "id long")
    with (
        caplog.at_level(logging.INFO, logger="seglib.platform.progress"),
        stage_progress(spark, "features", interval=0.4),
    ):
        assert frame.count() == 6
    lines = [record.getMessage() for record in caplog.records]
    progress = [
        line for line in lines if re.fullmatch(r"features: \d+s, Spark stage \d+ '\w+' \d/6 tasks.*", line)
    ]
    assert progress, lines
    done = [int(re.search(r"(\d)/6 tasks", line).group(1)) for line in progress]
    assert done == sorted(done)  # tasks only ever complete
    assert any("s left" in line for line in progress)  # once some tasks are done, an estimate
    # Nothing is printed once the stage has ended.
    count = len(caplog.records)
    time.sleep(1.0)
    assert len(caplog.records) == count


def test_a_short_stage_prints_nothing(spark, caplog):
    with (
        caplog.at_level(logging.INFO, logger="seglib.platform.progress"),
        stage_progress(spark, "report", interval=5),
    ):
        spark.range(3).count()
    assert not caplog.records
