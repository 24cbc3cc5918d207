"""`seg run`: every stage in order, with wall times, ending in a segment summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from seglib.contract.config import SeglibConfig, Stage
from seglib.contract.errors import ConfigError
from seglib.features.stage import features
from seglib.inputs.sources import InputFrames
from seglib.platform.progress import stage_progress
from seglib.reporting.stage import report
from seglib.representation.embedding import embed
from seglib.representation.stage import train
from seglib.segments.stage import ClusterResult, cluster
from seglib.synthetic.generator import generate

log = logging.getLogger(__name__)

STAGES: dict[Stage, Callable[[SparkSession, SeglibConfig], Any]] = {
    "generate": generate,
    "features": features,
    "train": train,
    "embed": embed,
    "cluster": cluster,
    "report": report,
}


@dataclass
class PipelineReport:
    stage_seconds: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def clustering(self) -> ClusterResult | None:
        return self.results.get("cluster")

    def format(self) -> str:
        timings = "  ".join(f"{stage} {seconds:.1f}s" for stage, seconds in self.stage_seconds.items())
        parts = [f"stage wall times: {timings}"]
        if self.clustering is not None:
            parts.append(self.clustering.format())
        if "report" in self.results:
            parts.append(self.results["report"].format())
        return "\n".join(parts)


def progress_of(spark: SparkSession, stage: str) -> AbstractContextManager[None]:
    """Spark progress lines for a long stage; training prints its own line per epoch instead."""
    return nullcontext() if stage == "train" else stage_progress(spark, stage)


def run_pipeline(
    spark: SparkSession, config: SeglibConfig, frames: InputFrames | None = None
) -> PipelineReport:
    """Run `run.stages` in order; `frames` (the Python API) replaces configured input sources by DataFrames."""
    if frames and "generate" in config.run.stages:
        raise ConfigError("the generate stage writes the input tables; leave it out when passing DataFrames")
    report = PipelineReport()
    for stage in config.run.stages:
        log.info("stage %s: starting", stage)
        started = time.perf_counter()
        with progress_of(spark, stage):
            if stage == "embed" and "train" in report.results:
                # The model this run trained, by name: never "the latest" that another job may have moved.
                report.results[stage] = embed(spark, config, model_version=report.results["train"].version)
            elif stage == "features":
                report.results[stage] = features(spark, config, frames=frames)
            else:
                report.results[stage] = STAGES[stage](spark, config)
        report.stage_seconds[stage] = time.perf_counter() - started
        log.info("stage %s: done in %.1fs", stage, report.stage_seconds[stage])
    return report
