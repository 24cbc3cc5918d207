"""The spark-submit entry points and the `seg` command, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglib.session import delta_package_coordinates

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# As in an activated venv: spark-submit finds pyspark and starts workers with this interpreter.
VENV_ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "PYSPARK_PYTHON": sys.executable,
}


@pytest.mark.slow
def test_generate_job_runs_under_spark_submit(tmp_path):
    result = subprocess.run(
        [
            str(BIN / "spark-submit"),
            "--packages", delta_package_coordinates(),
            "--conf", "spark.ui.enabled=false",
            str(REPO / "jobs" / "generate.py"),
            "--config", str(REPO / "conf" / "default.yaml"),
            "--set", "spark.master=null",
            "--set", "generate.customers=200",
            "--set", f"storage.warehouse_dir={tmp_path / 'warehouse'}",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False, env=VENV_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated 200 customers" in result.stdout
    for table in ("customers", "transactions", "events", "persona_truth"):
        assert (tmp_path / "warehouse" / "seg_raw.db" / table / "_delta_log").is_dir()


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
