"""Core RFM in Spark against DuckDB on the same Parquet files, and the full feature job's throughput.

    .venv/bin/python bench/features.py [--sizes 1000000 10000000] [--driver-memory 1g]

For each size it generates synthetic transactions (Spark, hashed draws) as Parquet, then in one run:
  * DuckDB: recency/frequency/monetary per customer, written to Parquet;
  * Spark, naive: the same query with Spark's out-of-the-box settings (200 shuffle partitions);
  * Spark, seglib: the same query in the session seglib opens (shuffle partitions sized to the cores);
  * the full seglib feature job (validation + quarantine, every transaction feature, the preprocessing
    pipeline fit, Delta writes) over the same files as a transactions-only Parquet source.
The Spark session runs with the given driver memory (local mode: the executors live in the driver),
so 1g proves that nothing is collected to the driver. Last line: RESULT with the headline figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from seglib.cli import configure_logging
from seglib.contract.config import SeglibConfig, load_config
from seglib.contract.domain import DOMAINS
from seglib.features.stage import features
from seglib.platform.session import open_session
from seglib.synthetic.generator import generate_customers, generate_transactions

SNAPSHOT = "2025-12-31"
TRANSACTIONS_PER_CUSTOMER = 21.4  # measured on the generator's e-commerce personas

RFM_SQL = """
SELECT customer_id,
       datediff(DATE'{snapshot}', CAST(max(timestamp) AS DATE)) AS recency_days,
       count(*) AS frequency,
       sum(amount) AS monetary
FROM {source}
WHERE timestamp < DATE'{snapshot}' + INTERVAL 1 DAY
GROUP BY customer_id
"""
DUCKDB_SQL = """
COPY (
  SELECT customer_id,
         date_diff('day', CAST(max(timestamp) AS DATE), DATE '{snapshot}') AS recency_days,
         count(*) AS frequency,
         sum(amount) AS monetary
  FROM read_parquet('{files}/*.parquet')
  WHERE timestamp < DATE '{snapshot}' + INTERVAL 1 DAY
  GROUP BY customer_id
) TO '{output}' (FORMAT PARQUET)
"""


def write_transactions(spark: SparkSession, target: Path, rows: int) -> int:
    customers = max(10, int(rows / TRANSACTIONS_PER_CUSTOMER))
    end = dt.date.fromisoformat(SNAPSHOT)
    people = generate_customers(spark, customers, seed=11, end_date=end, partitions=8)
    transactions = generate_transactions(people, 11, end, DOMAINS["ecommerce"])
    transactions.withColumn("customer_id", F.col("customer_id").cast("string")).write.mode(
        "overwrite"
    ).parquet(str(target))
    return spark.read.parquet(str(target)).count()


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def spark_rfm(spark: SparkSession, files: Path, output: Path, shuffle_partitions: int) -> float:
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    spark.read.parquet(str(files)).createOrReplaceTempView("bench_transactions")
    query = RFM_SQL.format(snapshot=SNAPSHOT, source="bench_transactions")
    return timed(lambda: spark.sql(query).write.mode("overwrite").parquet(str(output)))


def duckdb_rfm(files: Path, output: Path) -> float:
    connection = duckdb.connect()
    seconds = timed(
        lambda: connection.execute(DUCKDB_SQL.format(snapshot=SNAPSHOT, files=files, output=output))
    )
    connection.close()
    return seconds


def feature_job_config(root: Path, files: Path, driver_memory: str, shuffle_partitions: int) -> SeglibConfig:
    columns = {
        "customer_id": "customer_id", "timestamp": "timestamp", "amount": "amount",
        "transaction_id": "transaction_id", "order_id": "order_id", "quantity": "quantity",
        "category": "category", "channel": "channel", "discount": "discount", "is_return": "is_return",
    }  # fmt: skip
    return load_config(
        None,
        [
            f"storage.warehouse_dir={root / 'warehouse'}",
            f"storage.model_dir={root / 'models'}",
            f"spark.driver_memory={driver_memory}",
            f"spark.shuffle_partitions={shuffle_partitions}",
            "spark.log_level=ERROR",
            "spark.conf={spark.ui.enabled: 'false'}",
            f"input.transactions.source={{format: parquet, path: '{files}'}}",
            f"input.transactions.columns={json.dumps(columns)}",
            "input.customers=null",
            "input.events=null",
            f"features.snapshot_date={SNAPSHOT}",
            "features.refit=true",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--driver-memory", default="1g")
    parser.add_argument("--shuffle-partitions", type=int, default=4)
    args = parser.parse_args()
    configure_logging(verbose=False)
    root = Path(tempfile.mkdtemp(prefix="seg-bench-features-"))
    config = feature_job_config(root, root, args.driver_memory, args.shuffle_partitions)
    spark = open_session(config)
    results = []
    for size in args.sizes:
        files = root / f"transactions_{size}"
        rows = write_transactions(spark, files, size)
        duck = duckdb_rfm(files, root / f"duck_{size}.parquet")
        naive = spark_rfm(spark, files, root / f"naive_{size}", shuffle_partitions=200)
        tuned = spark_rfm(spark, files, root / f"tuned_{size}", shuffle_partitions=args.shuffle_partitions)
        job_config = feature_job_config(
            root / f"job_{size}", files, args.driver_memory, args.shuffle_partitions
        )
        spark.conf.set("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
        job_seconds = timed(lambda config=job_config: features(spark, config))
        results.append((size, rows, duck, naive, tuned, job_seconds))
        print(
            f"{rows:>10,} transactions: duckdb {duck:6.2f}s  spark naive {naive:6.2f}s ({naive / duck:5.1f}x)  "
            f"spark seglib {tuned:6.2f}s ({tuned / duck:5.1f}x)  full feature job {job_seconds:7.1f}s "
            f"({rows / job_seconds:,.0f} rows/s)",
            flush=True,
        )
        shutil.rmtree(files.parent / f"naive_{size}", ignore_errors=True)
    peak = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryMXBean()  # type: ignore[union-attr]
    heap_mib = peak.getHeapMemoryUsage().getMax() / 2**20
    print(f"driver heap limit {heap_mib:.0f} MiB (spark.driver.memory={args.driver_memory})")
    first, last = results[0], results[-1]
    rate_first, rate_last = first[1] / first[5], last[1] / last[5]
    ratios = {size: tuned / duck for size, _, duck, _, tuned, _ in results}
    print(
        "RESULT "
        f"spark_over_duckdb_1m={ratios.get(1_000_000, ratios[first[0]]):.2f} "
        f"spark_over_duckdb_10m={ratios.get(10_000_000, ratios[last[0]]):.2f} "
        f"naive_spark_over_duckdb_10m={last[3] / last[2]:.2f} "
        f"feature_job_rows_per_s_10m={rate_last:.0f} "
        f"rate_10m_over_1m={rate_last / rate_first:.2f}"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
