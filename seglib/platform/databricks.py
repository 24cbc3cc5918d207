"""What seglib tells a Databricks job run: task values that later tasks of the job can branch on."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def set_task_values(spark: SparkSession, values: Mapping[str, bool | int | float | str]) -> bool:
    """`dbutils.jobs.taskValues.set` for each value when running in a Databricks job (read downstream
    with `{{tasks.<task>.values.<key>}}`); elsewhere nothing. Returns whether the values were set."""
    if not on_databricks():
        return False
    try:
        from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]  # Databricks Runtime only
    except ImportError:
        log.warning("DATABRICKS_RUNTIME_VERSION is set but pyspark.dbutils is missing: task values not set")
        return False
    task_values = DBUtils(spark).jobs.taskValues
    for key, value in values.items():
        task_values.set(key=key, value=value)
    log.info("set Databricks task values %s", ", ".join(f"{key}={value}" for key, value in values.items()))
    return True
