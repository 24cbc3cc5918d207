"""The spark-submit entry points and the `seg` command, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# As in an activated venv: spark-submit finds pyspark and starts workers with this interpreter.
VENV_ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "PYSPARK_PYTHON": sys.executable,
}


@pytest.mark.slow
def test_the_whole_pipeline_runs_through_spark_submit_on_a_local_cluster(spark, tmp_path):
    """deploy/spark-submit/submit.sh runs jobs/run.py with spark-submit on local-cluster: a standalone
    master, two workers and two executor JVMs with their own Python workers, as on a real cluster;
    the library travels as a zip through --py-files and the config through --files."""
    events = tmp_path / "events"
    events.mkdir()
    environment = {
        **VENV_ENV,
        "PYTHON": sys.executable,
        "SEG_MASTER": "local-cluster[2,1,1024]",
        "SEG_EXECUTOR_MEMORY": "1g",
        "SEG_EXTRA_ARGS": f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={events.as_uri()}",
    }
    result = subprocess.run(
        [
            str(REPO / "deploy" / "spark-submit" / "submit.sh"), "run",
            "--set", "generate.customers=200",
            "--set", "train.epochs=3",
            "--set", "train.num_proc=2",
            "--set", "spark.shuffle_partitions=2",
            "--set", "generate.partitions=2",
            "--set", "cluster.selection.k_max=5",
            "--set", "storage.database=seg_submitted",
            "--set", "input.database=seg_submitted_raw",
            "--set", f"storage.warehouse_dir={tmp_path / 'warehouse'}",
            "--set", f"storage.model_dir={tmp_path / 'models'}",
            "--set", f"storage.cache_dir={tmp_path / 'cache'}",
            "--set", f"report.directory={tmp_path / 'reports'}",
        ],
        capture_output=True, text=True, timeout=540, cwd=tmp_path, check=False, env=environment,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        "stage wall times: generate" in result.stdout
        and "report" in result.stdout.split("stage wall times")[1]
    )

    # The work ran in the two executor JVMs (and never in the driver), Horovod's ranks among it.
    executors_added: set[str] = set()
    tasks_by_executor: dict[str, int] = {}
    (log,) = events.iterdir()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerExecutorAdded":
            executors_added.add(event["Executor ID"])
        elif event["Event"] == "SparkListenerTaskEnd":
            executor = event["Task Info"]["Executor ID"]
            tasks_by_executor[executor] = tasks_by_executor.get(executor, 0) + 1
    assert executors_added >= {"0", "1"}
    assert set(tasks_by_executor) <= executors_added and min(tasks_by_executor.values()) > 50

    database = tmp_path / "warehouse" / "seg_submitted.db"
    segments = spark.read.format("delta").load(str(database / "customer_segments"))
    assert segments.count() == segments.select("customer_id").distinct().count() == 200
    runs = spark.read.format("delta").load(str(database / "segmentation_runs")).collect()
    assert len(runs) == 1 and runs[0]["k"] >= 2
    (version,) = (tmp_path / "models" / "autoencoder").glob("ae-*")
    assert json.loads((version / "metadata.json").read_text())["workers"] == 2
    assert (tmp_path / "reports" / "2025-12-31" / "report.html").is_file()


def test_seg_command_fails_clearly_on_a_bad_override(tmp_path):
    result = subprocess.run(
        [str(BIN / "seg"), "train", "--set", "train.epochs=0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False, env=VENV_ENV,
    )  # fmt: skip
    assert result.returncode == 2
    assert "train.epochs: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_seg_sql_reports_a_bad_query_without_a_traceback(spark, tmp_path, capsys):
    from seglib.cli import main

    code = main(
        ["sql", "SELECT * FROM seg_nowhere.customer_segments", "--set", f"storage.warehouse_dir={tmp_path}"]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert "seg sql: error: the query failed: [TABLE_OR_VIEW_NOT_FOUND]" in error
    assert "Traceback" not in error
