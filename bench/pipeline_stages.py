"""Wall time of each pipeline stage and the persona recovery (ARI) at a given size.

    .venv/bin/python bench/pipeline_stages.py [--customers 3000] [--set key=value ...]

Runs `seg run` on fresh folders under a temporary directory, then scores the segments against the
planted personas (adjusted Rand index) and against KMeans on the scaled features without the
autoencoder, both measured in this one run. Last line: RESULT with the headline figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from seglib.cli import configure_logging
from seglib.contract.config import load_config
from seglib.contract.tables import TRUTH_TABLE
from seglib.pipeline import run_pipeline
from seglib.platform.session import open_session
from seglib.segments.algorithms import fit_clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    configure_logging(verbose=False)
    root = Path(tempfile.mkdtemp(prefix="seg-bench-"))
    config = load_config(
        None,
        [
            f"storage.warehouse_dir={root / 'warehouse'}",
            f"storage.model_dir={root / 'models'}",
            f"storage.cache_dir={root / 'cache'}",
            f"generate.customers={args.customers}",
            "spark.log_level=ERROR",
            *args.overrides,
        ],
    )
    started = time.perf_counter()
    spark = open_session(config)
    session_seconds = time.perf_counter() - started
    report = run_pipeline(spark, config)
    database, raw = config.storage.database, config.input.database
    truth = spark.table(f"{raw}.{TRUTH_TABLE}").withColumn("customer_id", F.col("customer_id").cast("string"))
    scored = (
        spark.table(f"{database}.customer_segments")
        .join(truth, "customer_id")
        .select("segment_id", "persona")
    )
    rows = scored.collect()
    model_ari = adjusted_rand_score([r["persona"] for r in rows], [r["segment_id"] for r in rows])

    features = spark.table(f"{database}.customer_features").select(
        "customer_id", array_to_vector(F.col("features")).alias("vector")
    )
    baseline = (
        fit_clusters(features, "vector", config.cluster, report.clustering.k)
        .transform(features)
        .join(truth, "customer_id")
    )
    base_rows = baseline.select("_cluster", "persona").collect()
    baseline_ari = adjusted_rand_score([r["persona"] for r in base_rows], [r["_cluster"] for r in base_rows])

    generated = report.results["generate"]
    transactions, events = generated.transactions, generated.events
    total = sum(report.stage_seconds.values())
    print(f"customers {args.customers}, transactions {transactions}, events {events}")
    print(f"session start {session_seconds:.1f}s")
    for stage, seconds in report.stage_seconds.items():
        print(f"{stage:>9} {seconds:7.1f}s  {seconds / total:6.1%} of the pipeline")
    print(f"persona ARI: autoencoder + KMeans {model_ari:.3f}, KMeans on scaled features {baseline_ari:.3f}")
    figures = " ".join(f"{stage}_s={seconds:.1f}" for stage, seconds in report.stage_seconds.items())
    print(
        f"RESULT customers={args.customers} {figures} total_s={total:.1f} ari_autoencoder={model_ari:.3f} "
        f"ari_features_kmeans={baseline_ari:.3f} ari_ratio={model_ari / baseline_ari:.3f}"
    )


if __name__ == "__main__":
    main()
