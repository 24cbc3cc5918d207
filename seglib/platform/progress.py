"""Progress of a long pipeline stage on the console: what Spark is running, how far, and an estimate.

Spark's own console progress bar is off in seglib sessions (it interleaves with the logs). Instead,
while a stage runs, a thread on the driver asks Spark's status tracker every `interval` seconds which
Spark stages are active and logs one line: elapsed time, the tasks done of those stages, and a linear
estimate of the time left in them. Short stages print nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 15.0


def describe_active_work(
    spark: SparkSession, stage: str, elapsed: float, stage_started: dict[int, float]
) -> str:
    """One line on the Spark stages running now; `stage_started` remembers when each was first seen."""
    tracker = spark.sparkContext.statusTracker()
    infos = [
        info for info in (tracker.getStageInfo(i) for i in tracker.getActiveStageIds()) if info is not None
    ]
    if not infos:
        return f"{stage}: {elapsed:,.0f}s, Spark between jobs (driver-side work)"
    now = time.monotonic()
    parts = []
    for info in sorted(infos, key=lambda item: item.stageId):
        first_seen = stage_started.setdefault(info.stageId, now)
        done, total = info.numCompletedTasks, info.numTasks
        estimate = ""
        if 0 < done < total:
            left = (now - first_seen) / done * (total - done)
            estimate = f", about {left:,.0f}s left"
        parts.append(
            f"Spark stage {info.stageId} '{info.name.split(' at ')[0]}' {done}/{total} tasks{estimate}"
        )
    return f"{stage}: {elapsed:,.0f}s, " + "; ".join(parts)


@contextmanager
def stage_progress(
    spark: SparkSession, stage: str, interval: float = PROGRESS_INTERVAL_SECONDS
) -> Iterator[None]:
    """Log a progress line every `interval` seconds while the body runs."""
    stop = threading.Event()
    started = time.monotonic()
    stage_started: dict[int, float] = {}

    def report() -> None:
        while not stop.wait(interval):
            try:
                log.info("%s", describe_active_work(spark, stage, time.monotonic() - started, stage_started))
            except Exception as error:  # the session may be stopping; progress must never fail a stage
                log.debug("no progress line: %s", error)

    reporter = threading.Thread(target=report, name=f"seglib-progress-{stage}", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
