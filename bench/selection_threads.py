"""Automatic k's candidates on the driver: the product's threads (one per core, one BLAS thread each)
against the former settings (four candidate threads, each numpy fit on BLAS's own threads).

    .venv/bin/python bench/selection_threads.py [--rows 8000] [--members 4]

Scores every k of the default range with `segments.selection.score_candidates` on one sample of planted
groups embedded like a model of `--members` members (8 values each), both ways, on an idle host and
beside one busy process (a Python loop spinning on one core, as another job on a shared driver). Prints
the seconds of each case and checks that both ways scored the same candidates. Last line: RESULT with
the former's seconds over the product's, idle and busy.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pyspark.ml.functions import array_to_vector

from seglib.cli import configure_logging
from seglib.contract.config import load_config
from seglib.platform.session import open_session
from seglib.segments.selection import Candidate, score_candidates


@contextlib.contextmanager
def busy_process(busy: bool) -> Iterator[None]:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--members", type=int, default=4)
    args = parser.parse_args()
    configure_logging(verbose=False)
    root = Path(tempfile.mkdtemp(prefix="seg-bench-threads-"))
    config = load_config(None, ["spark.log_level=ERROR", f"storage.warehouse_dir={root / 'warehouse'}"])
    spark = open_session(config)
    settings = config.cluster
    generator = np.random.default_rng(7)
    groups = np.arange(args.rows) % 5
    # Each member sees the same five groups through its own random map, as trained members do.
    points = np.hstack(
        [
            generator.normal(scale=2.0, size=(5, 8))[groups] + generator.normal(size=(args.rows, 8))
            for _ in range(args.members)
        ]
    )
    sample = spark.createDataFrame([(row.tolist(),) for row in points], "point array<double>").select(
        array_to_vector("point").alias("v")
    )
    ways = {"former": {"threads": 4, "one_blas_thread": False}, "seglib": {}}
    seconds: dict[tuple[str, bool], float] = {}
    scored: dict[tuple[str, bool], list[Candidate]] = {}
    for busy in (False, True):
        with busy_process(busy):
            for way, options in ways.items():
                started = time.perf_counter()
                scored[way, busy] = score_candidates(sample, points, "v", settings, args.members, **options)
                seconds[way, busy] = time.perf_counter() - started
                print(f"{'busy' if busy else 'idle'} host, {way}: {seconds[way, busy]:.1f} s", flush=True)
    # The same scores up to the last bits (BLAS sums in another order on one thread than on several).
    same = all(
        [(c.k, c.eligible) for c in scored["former", busy]]
        == [(c.k, c.eligible) for c in scored["seglib", busy]]
        and np.allclose(
            [
                (c.silhouette, c.smallest_share, c.prediction_strength, c.member_agreement or 0.0)
                for c in scored["former", busy]
            ],
            [
                (c.silhouette, c.smallest_share, c.prediction_strength, c.member_agreement or 0.0)
                for c in scored["seglib", busy]
            ],
            atol=1e-6,
        )
        for busy in (False, True)
    )
    print(f"{args.rows} rows x {points.shape[1]} values ({args.members} members), k "
          f"{settings.selection.k_min}..{settings.selection.k_max}; both ways scored the same: {same}")  # fmt: skip
    print(
        f"RESULT idle_former_over_seglib={seconds['former', False] / seconds['seglib', False]:.2f} "
        f"busy_former_over_seglib={seconds['former', True] / seconds['seglib', True]:.2f} same_candidates={same}"
    )


if __name__ == "__main__":
    main()
