"""The `seg` command: bad input ends with a clear message and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
