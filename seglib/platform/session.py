"""The one place that composes Spark settings. Only entry points and test fixtures call it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib import metadata

from pyspark.sql import SparkSession

from seglib.contract.config import SeglibConfig
from seglib.contract.uris import resolve_uri

log = logging.getLogger(__name__)


def delta_package_coordinates() -> str | None:
    """Maven coordinates of the Delta jars that match the installed delta-spark Python package; None
    without it (a runtime such as Databricks brings Delta itself, seglib[local] installs the package)."""
    try:
        version = metadata.version("delta-spark")
    except metadata.PackageNotFoundError:
        return None
    return f"io.delta:delta-spark_2.12:{version}"


# The session settings seglib's tables depend on (the others only change its speed). Entry points
# open their session with them; the Python API sets them for each call on a session it did not open.
RESULT_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    # An unparseable timestamp in a string column becomes null (and is quarantined), never an error.
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
}


def session_settings(config: SeglibConfig) -> dict[str, str]:
    """Spark settings for a seglib session: Delta, UTC, the venv's Python on executors."""
    settings = {
        "spark.app.name": config.spark.app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        **RESULT_SETTINGS,
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.sql.warehouse.dir": resolve_uri(config.storage.warehouse_dir),
        "spark.driver.memory": config.spark.driver_memory,
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    # Delta rebuilds a table's state from its log with this many partitions (default 50): far too
    # many tasks for the small, per-snapshot logs of seglib's tables on a few cores, where it made
    # every write and read of a small table about twice as slow. It follows the shuffle setting.
    delta_jars = delta_package_coordinates()
    if delta_jars is not None:
        settings["spark.jars.packages"] = delta_jars
    settings["spark.databricks.delta.snapshotPartitions"] = str(min(50, config.spark.shuffle_partitions))
    if config.spark.master is not None:
        settings["spark.master"] = config.spark.master
    if is_local_master(config.spark.master):
        # Local workers must run this interpreter, the one with torch, petastorm and horovod. On a
        # cluster the executors' Python comes from the cluster (PYSPARK_PYTHON, a packed venv).
        settings["spark.pyspark.python"] = os.environ.get("PYSPARK_PYTHON", sys.executable)
    settings.update(config.spark.conf)
    return settings


def is_local_master(master: str | None) -> bool:
    return master == "local" or (master is not None and master.startswith(("local[", "local-cluster[")))


def open_session(config: SeglibConfig) -> SparkSession:
    """Open (or join) the SparkSession for a seglib entry point."""
    if is_local_master(config.spark.master):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    for key, value in session_settings(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.spark.log_level)
    log.info("Spark %s session open (master %s)", spark.version, spark.sparkContext.master)
    return spark


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """Runtime SQL settings set for the body, then each restored to its earlier value (or unset)."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, earlier in previous.items():
            if earlier is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, earlier)


def session_time_zone(spark: SparkSession, zone: str) -> AbstractContextManager[None]:
    """Spark's session time zone set to `zone` for the body, then restored: days, weekdays and hours of
    timestamps, and zone-less timestamps read from text, follow it."""
    return session_conf(spark, {"spark.sql.session.timeZone": zone})
