"""Automatic k: scoring the candidates on the driver-side sample against refitting each with Spark.

    .venv/bin/python bench/k_selection.py [--rows 5000] [--clusters 5] [--splits 2]

In one session, on one sample of planted clusters (8 dimensions, like the embeddings), every k of the
default range is scored both ways with the same settings: `spark` refits each candidate and each half
with Spark MLlib and scores it with ClusteringEvaluator (the path bisecting k-means and Gaussian
mixtures still take, and k-means took before); `driver` clusters and scores the collected sample with
numpy (what k-means does now). Prints each k's silhouette and prediction strength both ways, the
seconds, and the chosen k. Last line: RESULT with the speed-up and whether both chose the same k.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from pyspark.ml.functions import array_to_vector

from seglib.cli import configure_logging
from seglib.contract.config import load_config
from seglib.platform.session import open_session
from seglib.segments.selection import _score_candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--splits", type=int, default=2)
    args = parser.parse_args()
    configure_logging(verbose=False)
    root = Path(tempfile.mkdtemp(prefix="seg-bench-k-"))
    config = load_config(
        None,
        [
            "spark.log_level=ERROR",
            f"storage.warehouse_dir={root / 'warehouse'}",
            f"cluster.selection.splits={args.splits}",
        ],
    )
    spark = open_session(config)
    settings = config.cluster
    generator = np.random.default_rng(7)
    centres = generator.normal(scale=2.5, size=(args.clusters, 8))
    points = centres[np.arange(args.rows) % args.clusters] + generator.normal(size=(args.rows, 8))
    sample = (
        spark.createDataFrame([(row.tolist(),) for row in points], "point array<double>")
        .select(array_to_vector("point").alias("v"))
        .repartition(spark.sparkContext.defaultParallelism)
        .cache()
    )
    sample.count()
    collected = np.array([row[0].toArray() for row in sample.collect()], dtype=np.float64)
    ks = range(settings.selection.k_min, settings.selection.k_max + 1)
    seconds, chosen = {}, {}
    candidates = {}
    for way, local_points in (("spark", None), ("driver", collected)):
        started = time.perf_counter()
        candidates[way] = [
            _score_candidate(sample, local_points, "v", settings, k, settings.restarts, 1) for k in ks
        ]
        seconds[way] = time.perf_counter() - started
        eligible = [candidate.k for candidate in candidates[way] if candidate.eligible]
        chosen[way] = max(eligible) if eligible else None
    print(f"{args.rows} rows, {args.clusters} planted clusters, k {ks.start}..{ks.stop - 1}, "
          f"{settings.selection.splits} splits, {settings.restarts} restarts")  # fmt: skip
    print(f"{'k':>3} | spark silhouette / strength | driver silhouette / strength")
    for spark_candidate, driver_candidate in zip(candidates["spark"], candidates["driver"], strict=True):
        print(
            f"{spark_candidate.k:>3} | {spark_candidate.silhouette:10.4f} / {spark_candidate.prediction_strength:.3f}"
            f"        | {driver_candidate.silhouette:10.4f} / {driver_candidate.prediction_strength:.3f}"
        )
    print(f"spark {seconds['spark']:.1f} s, chose k={chosen['spark']}; "
          f"driver {seconds['driver']:.1f} s, chose k={chosen['driver']}")  # fmt: skip
    print(
        f"RESULT spark_over_driver_seconds={seconds['spark'] / seconds['driver']:.2f} "
        f"same_k={int(chosen['spark'] == chosen['driver'])}"
    )


if __name__ == "__main__":
    main()
