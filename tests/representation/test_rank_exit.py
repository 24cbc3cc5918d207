"""How a torchrun worker process ends: after its script, without the native libraries' static teardown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# os.abort stands for a native library whose teardown aborts the process (std::terminate, SIGABRT).
WORKER_SCRIPT = """
import atexit, os, sys
atexit.register(os.abort)
if sys.argv[1] != "without-hook":
    from seglib.representation.rank_loop import end_torchrun_worker_without_native_teardown
    atexit.register(end_torchrun_worker_without_native_teardown)
print("result written")  # block-buffered on a pipe: the hook must flush it
if sys.argv[1] == "failing":
    raise RuntimeError("the worker script failed")
"""


def run_worker(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, mode], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_an_aborting_teardown_is_what_the_hook_prevents():
    worker = run_worker("without-hook")
    assert worker.returncode == -6  # SIGABRT, the exit torchrun's agent reported


@pytest.mark.parametrize(("mode", "status"), [("succeeding", 0), ("failing", 1)])
def test_the_worker_ends_with_its_scripts_status_and_its_output_flushed(mode, status):
    worker = run_worker(mode)
    assert worker.returncode == status
    assert worker.stdout == "result written\n"
    assert ("RuntimeError: the worker script failed" in worker.stderr) == (mode == "failing")
