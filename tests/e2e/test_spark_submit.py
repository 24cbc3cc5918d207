"""The spark-submit entry points and the `seg` command, run end to end as a user runs them: the whole
pipeline on a local cluster that loses an executor, and a training whose driver is killed."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from seglib.contract.config import load_config
from seglib.features.stage import features
from seglib.representation.stage import train
from seglib.synthetic.generator import generate
from tests.conftest import horovod_ranks, suite_config, suite_overrides

# About this file's wall time beside the other test worker: the longest files start first (conftest).
FILE_SECONDS = 330
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# As in an activated venv: spark-submit finds pyspark and starts workers with this interpreter.
VENV_ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "PYSPARK_PYTHON": sys.executable,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def executor_pid(app_id: str, executor_id: str) -> int:
    """The process of one executor JVM of a standalone application (local-cluster's are on this machine)."""
    wanted = {("--executor-id", executor_id), ("--app-id", app_id)}
    for process in psutil.process_iter(["cmdline"]):
        words = process.info["cmdline"] or []
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in words and wanted <= set(
            itertools.pairwise(words)
        ):
            return int(process.pid)
    raise LookupError(f"no process for executor {executor_id} of {app_id}")


def kill_a_busy_executor_during_the_features_stage(
    ui_port: int, output: list[str], lines: Iterator[str]
) -> int:
    """Read the job's output until the features stage starts, then SIGKILL an executor in the middle of
    a task, and read on to the end. Returns the killed process id.

    The driver's REST API names an executor with a running task, but the task may end before a signal
    lands; so the executor is frozen first (SIGSTOP) and killed only if, once the driver's state has
    settled, the task is still running there (a frozen executor cannot finish it); otherwise it is
    thawed (SIGCONT) and the search goes on."""
    killed = 0
    api = f"http://127.0.0.1:{ui_port}/api/v1/applications"

    def busy_executors(application: str) -> dict[str, int]:
        executors = json.load(urllib.request.urlopen(f"{api}/{application}/executors", timeout=5))
        return {e["id"]: e["activeTasks"] for e in executors if e["id"] != "driver" and e["activeTasks"] > 0}

    for line in lines:
        output.append(line)
        if killed or "stage features: starting" not in line:
            continue
        (application,) = [app["id"] for app in json.load(urllib.request.urlopen(api, timeout=5))]
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            busy = busy_executors(application)
            if not busy:
                time.sleep(0.02)
                continue
            executor = next(iter(busy))
            pid = executor_pid(application, executor)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.5)  # longer than the UI's live-update period (0.1 s)
            if busy_executors(application).get(executor, 0) > 0:
                os.kill(pid, signal.SIGKILL)
                killed = pid
            else:
                os.kill(pid, signal.SIGCONT)
    return killed


@pytest.mark.slow
def test_the_whole_pipeline_runs_through_spark_submit_on_a_local_cluster_and_survives_a_lost_executor(
    spark, tmp_path
):
    """deploy/spark-submit/submit.sh runs jobs/run.py with spark-submit on local-cluster: a standalone
    master, two workers and two executor JVMs with their own Python workers, as on a real cluster;
    the library travels as a zip through --py-files and the config through --files. The raw tables
    are generated beforehand in this process's session (the generator is not what runs on a cluster)
    and found by the job under the same warehouse folder. While the feature stage runs, one executor
    JVM is killed in the middle of a task: Spark reruns what it lost, the standalone master starts a
    replacement, and the features equal those of a clean run."""
    generate(
        spark, suite_config(tmp_path, "seg_submitted", "generate.customers=200", "generate.partitions=2")
    )
    events = tmp_path / "events"
    events.mkdir()
    ui_port = free_port()
    environment = {
        **VENV_ENV,
        "PYTHON": sys.executable,
        "SEG_MASTER": "local-cluster[2,1,1024]",
        "SEG_EXECUTOR_MEMORY": "1g",
        "SEG_EXTRA_ARGS": f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={events.as_uri()} "
        f"--conf spark.ui.port={ui_port} --conf spark.port.maxRetries=0",
    }
    job = subprocess.Popen(
        [
            str(REPO / "deploy" / "spark-submit" / "submit.sh"), "run",
            "--set", "run.stages=[features, train, embed, cluster, report]",
            "--set", "train.epochs=2",
            "--set", "train.num_proc=2",
            "--set", "train.min_rows_per_worker=0",  # a rank on each executor, however few the customers
            "--set", "spark.shuffle_partitions=2",
            "--set", "cluster.k=4",
            "--set", "storage.database=seg_submitted",
            "--set", "input.database=seg_submitted_raw",
            "--set", f"storage.warehouse_dir={tmp_path / 'warehouse'}",
            "--set", f"storage.model_dir={tmp_path / 'models'}",
            "--set", f"storage.cache_dir={tmp_path / 'cache'}",
            "--set", f"report.directory={tmp_path / 'reports'}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=environment,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert job.stdout is not None
        killed = kill_a_busy_executor_during_the_features_stage(ui_port, output, iter(job.stdout))
        returncode = job.wait(timeout=540)
    finally:
        job.kill()
    text = "".join(output)
    assert returncode == 0, text[-6000:]
    assert killed, "the features stage never had a running task to interrupt"
    assert "stage wall times: features" in text and "report" in text.split("stage wall times")[1]
    print("stage wall times" + text.split("stage wall times")[1].split("\n")[0])

    # The work ran in the executor JVMs (never in the driver), Horovod's ranks among it; the killed
    # executor's running task was lost and run again, and a replacement executor joined.
    added_at: dict[str, int] = {}
    killed_at: dict[str, int] = {}
    tasks_by_executor: dict[str, int] = {}
    lost_tasks: set[tuple[int, int]] = set()
    finished_tasks: set[tuple[int, int]] = set()
    (log,) = events.iterdir()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerExecutorAdded":
            added_at[event["Executor ID"]] = event["Timestamp"]
        elif (
            event["Event"] == "SparkListenerExecutorRemoved"
            and "exited with code 137" in event["Removed Reason"]
        ):
            killed_at[event["Executor ID"]] = event["Timestamp"]  # 137: SIGKILL (the rest stop at the end)
        elif event["Event"] == "SparkListenerTaskEnd":
            executor = event["Task Info"]["Executor ID"]
            task = (event["Stage ID"], event["Task Info"]["Index"])
            if event["Task End Reason"]["Reason"] == "ExecutorLostFailure":
                lost_tasks.add(task)
            elif event["Task End Reason"]["Reason"] == "Success":
                finished_tasks.add(task)
                tasks_by_executor[executor] = tasks_by_executor.get(executor, 0) + 1
    ((killed_executor, kill_time),) = killed_at.items()
    assert killed_executor in {"0", "1"} and any(time > kill_time for time in added_at.values())
    assert lost_tasks and lost_tasks <= finished_tasks
    assert set(tasks_by_executor) <= set(added_at)
    assert min(count for executor, count in tasks_by_executor.items() if executor != killed_executor) > 50

    database = tmp_path / "warehouse" / "seg_submitted.db"
    segments = spark.read.format("delta").load(str(database / "customer_segments"))
    assert segments.count() == segments.select("customer_id").distinct().count() == 200
    runs = spark.read.format("delta").load(str(database / "segmentation_runs")).collect()
    assert len(runs) == 1 and runs[0]["k"] == 4
    (version,) = (tmp_path / "models" / "autoencoder").glob("ae-*")
    assert json.loads((version / "metadata.json").read_text())["workers"] == 2
    assert (tmp_path / "reports" / "2025-12-31" / "report.html").is_file()

    # A clean run of the feature stage on the same raw tables, in this process's local session.
    clean_config = suite_config(
        tmp_path, "seg_clean", "input.database=seg_submitted_raw", f"storage.model_dir={tmp_path / 'clean'}"
    )
    features(spark, clean_config)
    faulted = {row["customer_id"]: row.asDict() for row in spark.read.format("delta").load(
        str(database / "customer_features")).collect()}  # fmt: skip
    clean = {row["customer_id"]: row.asDict() for row in spark.table("seg_clean.customer_features").collect()}
    assert len(faulted) == 200 and faulted.keys() == clean.keys()
    for customer, row in clean.items():
        assert faulted[customer].keys() == row.keys()
        # Each run fitted its own preprocessing version (a name per fit); the values must agree.
        assert faulted[customer].pop("preprocessing_version") != row.pop("preprocessing_version")
        for column, value in row.items():
            # Sums may add partial results in another order (last-bit differences), nothing more.
            assert faulted[customer][column] == pytest.approx(value, rel=1e-9, abs=1e-12), (customer, column)


@pytest.mark.slow
def test_seg_train_resumes_from_the_last_checkpoint_after_its_driver_was_killed(spark, tmp_path):
    """The whole `seg train` process tree (driver, its JVM, the Spark tasks and Horovod ranks) is
    SIGKILLed half-way, as when the driver node of a cluster is lost; training started again for the
    same snapshot resumes after the last checkpoint the dead run wrote and finishes the epochs."""
    epochs = 30  # with batches of 4 the ranks write a checkpoint about every 0.2 s here
    settings = ["generate.customers=400", f"train.epochs={epochs}", "train.batch_size=4",
                "train.patience=100", "train.warmup_epochs=1", "train.progress=false"]  # fmt: skip
    overrides = suite_overrides(tmp_path, "seg_driver_killed", *settings)
    config = load_config(None, overrides)
    generate(spark, config)
    features(spark, config)
    checkpoints = tmp_path / "models" / "autoencoder" / "checkpoints"
    log = tmp_path / "seg-train.log"  # a file, not a pipe: nobody reads the output while it runs
    with log.open("w") as output:
        job = subprocess.Popen(
            [str(BIN / "seg"), "train", *itertools.chain.from_iterable(("--set", item) for item in overrides)],
            stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path, env=VENV_ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        # A run keeps only its latest checkpoints: wait for one of epoch 3 or later.
        while max((path.name for path in checkpoints.glob("*/epoch-*.pt")), default="") < "epoch-0003.pt":
            assert job.poll() is None, f"seg train ended before its third checkpoint:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no third checkpoint within 4 minutes"
            time.sleep(0.02)
        tree = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):  # a Python worker may just have ended
                process.send_signal(signal.SIGKILL)
    finally:
        job.kill()
        job.wait(timeout=60)
    psutil.wait_procs(tree, timeout=30)
    assert not horovod_ranks(), "a Horovod rank outlived its killed driver"
    written = sorted(path.name for path in checkpoints.glob("*/epoch-*.pt"))
    last_epoch = int(written[-1].removeprefix("epoch-").removesuffix(".pt"))
    assert 3 <= last_epoch < epochs

    resumed = train(spark, config)
    assert resumed.resumed_from_epoch == last_epoch
    assert [epoch["epoch"] for epoch in resumed.history] == list(range(1, epochs + 1))
    losses = [epoch["validation_loss"] for epoch in resumed.history]
    # The dead run had learned, and the first resumed epoch goes on from its weights, not from scratch.
    assert losses[last_epoch - 1] < 0.9 * losses[0]
    assert losses[last_epoch] < 1.1 * losses[last_epoch - 1]
    assert not sorted(checkpoints.glob("*/epoch-*.pt"))  # a finished run leaves nothing to resume
