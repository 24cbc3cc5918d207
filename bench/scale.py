"""The whole pipeline at growing sizes: wall time of every stage, peak driver memory, cost per million.

    .venv/bin/python bench/scale.py [--transactions 1000000 10000000 50000000] [--orders-scale 2.35]
                                    [--driver-memory 4g] [--keep]

For each size it generates customers, transactions and matching events (Spark, hashed draws; the
generator's personas with `generate.orders_scale` heavier buyers, so 1M customers make about 50M
transaction lines and 100M events), then runs features -> train -> embed -> cluster -> report through
`run_pipeline` in one Spark session opened with the given driver memory (local mode: the executors
live in that JVM too, so its heap bounds everything the job holds at once). Shuffle and generator
partitions grow with the size (about 2.5M transaction lines per shuffle partition), as a user would
set them. Training runs a fixed number of epochs (`--epochs`) so that sizes are comparable.

A sampler thread reads the resident memory of the driver's Python process and of the driver JVM
every half second; each stage's peak is printed. Seconds per million transaction lines are the
pipeline's wall time (generation excluded) over the lines generated; the cost of each added million
(between consecutive sizes) shows whether growth is linear. Last line: RESULT.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

from seglib.cli import configure_logging
from seglib.contract.config import SeglibConfig, Stage, load_config
from seglib.pipeline import STAGES
from seglib.platform.session import open_session
from seglib.synthetic.generator import generate

LINES_PER_CUSTOMER = 21.4  # the generator's e-commerce personas at orders_scale 1 (measured)
LINES_PER_SHUFFLE_PARTITION = 2_500_000
PIPELINE: tuple[Stage, ...] = tuple(stage for stage in STAGES if stage != "generate")  # timed per size


def resident_mib(pid: int) -> float:
    """Current resident set of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class MemorySampler:
    """Peak resident memory of the driver's Python process and JVM since the last `reset`."""

    jvm_pid: int
    interval_s: float = 0.5
    python_peak: float = 0.0
    jvm_peak: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.python_peak = max(self.python_peak, resident_mib(os.getpid()))
            self.jvm_peak = max(self.jvm_peak, resident_mib(self.jvm_pid))

    def reset(self) -> None:
        self.python_peak = resident_mib(os.getpid())
        self.jvm_peak = resident_mib(self.jvm_pid)

    def stop(self) -> None:
        self._stop.set()


def size_config(root: Path, customers: int, lines: int, args: argparse.Namespace) -> SeglibConfig:
    partitions = max(4, math.ceil(lines / LINES_PER_SHUFFLE_PARTITION))
    return load_config(
        None,
        [
            f"storage.warehouse_dir={root / 'warehouse'}",
            f"storage.model_dir={root / 'models'}",
            f"storage.cache_dir={root / 'cache'}",
            f"generate.customers={customers}",
            f"generate.orders_scale={args.orders_scale}",
            f"generate.partitions={partitions}",
            f"spark.shuffle_partitions={partitions}",
            f"spark.driver_memory={args.driver_memory}",
            "spark.log_level=ERROR",
            f"train.epochs={args.epochs}",
        ],
    )


def timed_stage(
    spark: SparkSession, config: SeglibConfig, stage: Stage, sampler: MemorySampler
) -> tuple[float, float, float]:
    sampler.reset()
    started = time.perf_counter()
    STAGES[stage](spark, config)
    seconds = time.perf_counter() - started
    return seconds, sampler.python_peak, sampler.jvm_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, nargs="+", default=[1_000_000, 10_000_000, 50_000_000])
    parser.add_argument("--orders-scale", type=float, default=2.35)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the generated data and tables")
    args = parser.parse_args()
    configure_logging(verbose=False)
    base = Path(tempfile.mkdtemp(prefix="seg-bench-scale-"))
    spark = open_session(size_config(base / "session", 10, 10, args))
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore[union-attr]
    sampler = MemorySampler(jvm_pid)
    sampler.start()
    heap = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryMXBean()  # type: ignore[union-attr]
    print(f"driver heap limit {heap.getHeapMemoryUsage().getMax() / 2**20:.0f} MiB "
          f"(spark.driver.memory={args.driver_memory}), cores {os.cpu_count()}", flush=True)  # fmt: skip

    per_million: dict[int, float] = {}
    totals: dict[int, tuple[int, float]] = {}  # target -> (lines generated, pipeline seconds)
    driver_peak = 0.0
    for target in args.transactions:
        customers = max(100, round(target / (LINES_PER_CUSTOMER * args.orders_scale)))
        root = base / f"tx_{target}"
        config = size_config(root, customers, target, args)
        spark.conf.set("spark.sql.shuffle.partitions", str(config.spark.shuffle_partitions))
        sampler.reset()
        started = time.perf_counter()
        counts = generate(spark, config)
        generate_seconds = time.perf_counter() - started
        lines = counts.transactions
        print(
            f"\n== {customers:,} customers, {lines:,} transaction lines, {counts.events:,} events "
            f"(generated in {generate_seconds:.0f}s; {config.spark.shuffle_partitions} partitions)",
            flush=True,
        )
        total = 0.0
        for stage in PIPELINE:
            seconds, python_peak, jvm_peak = timed_stage(spark, config, stage, sampler)
            total += seconds
            driver_peak = max(driver_peak, python_peak + jvm_peak)
            print(
                f"{stage:>9} {seconds:8.1f}s  {seconds / (lines / 1e6):6.2f} s per million lines  "
                f"peak RSS: python {python_peak:6.0f} MiB, JVM {jvm_peak:6.0f} MiB",
                flush=True,
            )
        per_million[target] = total / (lines / 1e6)
        totals[target] = (lines, total)
        print(f"{'pipeline':>9} {total:8.1f}s  {per_million[target]:6.2f} s per million lines", flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sampler.stop()
    spark.stop()

    # The cost of the lines a size adds over the previous one: flat when the growth is linear (the
    # per-million figure also falls as fixed costs, session and model set-up, spread out).
    print("\ntransaction lines   s per million   relative to the smallest   s per added million")
    smallest = per_million[args.transactions[0]]
    marginal = math.nan
    previous: tuple[int, float] | None = None
    for target, cost in per_million.items():
        lines, seconds = totals[target]
        if previous is not None:
            marginal = (seconds - previous[1]) / ((lines - previous[0]) / 1e6)
        print(f"{target:>17,} {cost:15.2f} {cost / smallest:24.2f} {marginal:21.2f}")
        previous = (lines, seconds)
    names = {1_000_000: "1m", 10_000_000: "10m", 50_000_000: "50m"}
    figures = " ".join(
        f"seconds_per_million_tx_{names.get(target, str(target))}={cost:.2f}"
        for target, cost in per_million.items()
    )
    print(
        f"RESULT {figures} marginal_seconds_per_million_tx_last={marginal:.2f} driver_peak_mib={driver_peak:.0f}"
    )


if __name__ == "__main__":
    main()
