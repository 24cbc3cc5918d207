"""Delta on seglib's small per-snapshot tables: log replay with Delta's default 50 partitions against
the setting seglib opens its sessions with (min(50, spark.shuffle_partitions)).

    .venv/bin/python bench/delta_small_tables.py [--rounds 10] [--rows 2000]

In one session, alternating the two settings round by round (the setting is a runtime SQL conf), it
times what every seglib stage does per table: a replaceWhere write of one snapshot through the
Warehouse, and the snapshot read with its emptiness check. Last line: RESULT with the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from seglib.cli import configure_logging
from seglib.contract.config import load_config
from seglib.contract.tables import SNAPSHOT_COLUMN
from seglib.platform.session import open_session
from seglib.platform.warehouse import Warehouse

SETTING = "spark.databricks.delta.snapshotPartitions"
SNAPSHOT = dt.date(2025, 12, 31)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    configure_logging(verbose=False)
    root = Path(tempfile.mkdtemp(prefix="seg-bench-delta-"))
    config = load_config(None, ["spark.log_level=ERROR", f"storage.warehouse_dir={root / 'warehouse'}"])
    spark = open_session(config)
    seglib_value = spark.conf.get(SETTING)
    warehouse = Warehouse.from_config(spark, config)
    rows = spark.range(args.rows).select(
        F.col("id").cast("string").alias("customer_id"),
        F.rand(1).alias("value"),
        F.lit(SNAPSHOT).alias(SNAPSHOT_COLUMN),
    )
    settings = {"delta default": "50", "seglib": seglib_value}
    timings: dict[str, dict[str, list[float]]] = {name: {"write": [], "read": []} for name in settings}
    # One table per setting: a Delta log's cached state (built with one setting) must not serve the other.
    tables = {name: f"small_{index}" for index, name in enumerate(settings)}
    for name, value in settings.items():  # warm-up: JVM, Delta log, catalog entry
        spark.conf.set(SETTING, value)
        warehouse.write_snapshot(rows, "bench", tables[name], SNAPSHOT)
    for _ in range(args.rounds):
        for name, value in settings.items():
            spark.conf.set(SETTING, value)
            started = time.perf_counter()
            warehouse.write_snapshot(rows, "bench", tables[name], SNAPSHOT)
            timings[name]["write"].append(time.perf_counter() - started)
            started = time.perf_counter()
            warehouse.read_snapshot("bench", tables[name], SNAPSHOT)
            timings[name]["read"].append(time.perf_counter() - started)
    medians = {
        name: {op: statistics.median(values) for op, values in ops.items()} for name, ops in timings.items()
    }
    print(f"{args.rows} rows, {args.rounds} rounds, shuffle partitions {config.spark.shuffle_partitions}")
    print(f"{'setting':>14} | {'snapshotPartitions':>18} | write median s | read check median s")
    for name, value in settings.items():
        print(f"{name:>14} | {value:>18} | {medians[name]['write']:14.3f} | {medians[name]['read']:19.3f}")
    write_ratio = medians["delta default"]["write"] / medians["seglib"]["write"]
    read_ratio = medians["delta default"]["read"] / medians["seglib"]["read"]
    print(f"RESULT default_over_seglib_write={write_ratio:.2f} default_over_seglib_read={read_ratio:.2f}")


if __name__ == "__main__":
    main()
