"""The `seg` command: bad input ends with a clear message and exit code 2, never a traceback."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglib.cli import build_parser, config_from_args

BIN = Path(sys.executable).parent
VENV_ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "PYSPARK_PYTHON": sys.executable,
}


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


def test_exit_statuses_tell_config_input_and_run_time_failures_apart(monkeypatch, capsys):
    import seglib.cli
    from seglib.contract.errors import (
        ConfigError,
        ExitStatus,
        InputDataError,
        TrainingError,
        UnsafeWriteError,
    )

    raised: list[BaseException] = []

    def failing_execute(*args, **kwargs):
        raise raised[-1]

    monkeypatch.setattr(seglib.cli, "execute", failing_execute)
    expected = {
        ConfigError("cluster.k: bad"): ExitStatus.USAGE,
        UnsafeWriteError("sales.orders was not created by seglib"): ExitStatus.USAGE,
        InputDataError("sales.orders: column amount is missing"): ExitStatus.INPUT_DATA,
        TrainingError("rank 1 failed"): ExitStatus.FAILURE,
        ZeroDivisionError("division by zero"): ExitStatus.FAILURE,
    }
    for error, status in expected.items():
        raised.append(error)
        assert seglib.cli.main(["features"]) == status
    assert [int(status) for status in ExitStatus] == [0, 2, 3, 4, 10]
    captured = capsys.readouterr().err
    assert "seg features: error: sales.orders: column amount is missing" in captured
    # an unexpected failure keeps its traceback for whoever debugs it
    assert "seg features: failed: ZeroDivisionError: division by zero" in captured and "Traceback" in captured


def test_task_values_are_set_through_dbutils_only_on_databricks(spark, monkeypatch):
    import types

    from seglib.platform.databricks import set_task_values

    recorded: list[tuple[str, object]] = []

    class TaskValues:
        def set(self, key: str, value: object) -> None:
            recorded.append((key, value))

    class DBUtils:  # the shape of Databricks Runtime's pyspark.dbutils.DBUtils(spark).jobs.taskValues
        def __init__(self, session) -> None:
            assert session is spark
            self.jobs = types.SimpleNamespace(taskValues=TaskValues())

    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert set_task_values(spark, {"retrain_recommended": True}) is False and recorded == []
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    assert set_task_values(spark, {"retrain_recommended": True}) is False  # no dbutils: a warning only
    monkeypatch.setitem(sys.modules, "pyspark.dbutils", types.SimpleNamespace(DBUtils=DBUtils))
    assert set_task_values(spark, {"retrain_recommended": True, "segment_psi": 0.31}) is True
    assert recorded == [("retrain_recommended", True), ("segment_psi", 0.31)]


def test_a_scheduled_run_processes_the_day_before_its_start_date():
    args = build_parser().parse_args(["score", "--snapshot-day-before", "2026-03-01", "--no-retrain-status"])
    assert config_from_args(args).features.snapshot_date == dt.date(2026, 2, 28)
    assert args.no_retrain_status
    # A --set of the snapshot is overridden by the day-before rule, which the scheduler passes last.
    args = build_parser().parse_args(
        ["features", "--set", "features.snapshot_date=2020-01-01", "--snapshot-day-before", "2025-01-01"]
    )
    assert config_from_args(args).features.snapshot_date == dt.date(2024, 12, 31)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "--snapshot-day-before", "yesterday"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["features", "--no-retrain-status"])  # a scoring option only
