"""One Spark session for the whole suite; every test gets its own warehouse folders and databases."""

from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from pyspark.sql import SparkSession

from seglib.contract.config import SeglibConfig, load_config
from seglib.platform.session import open_session

_database_numbers = itertools.count()

# The suite's data are tiny, so compiling whole-stage generated code costs more than it saves; the
# compiled path runs in the spark-submit test (production settings) and in every bench/ script.
SUITE_OVERRIDES = [
    "spark.shuffle_partitions=2",
    "spark.log_level=ERROR",
    "spark.conf={spark.ui.enabled: 'false', spark.sql.adaptive.coalescePartitions.enabled: 'false', "
    "spark.sql.codegen.wholeStage: 'false'}",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files that take longest (a module's `FILE_SECONDS`) first, each file's tests in their order.
    The README's command hands whole files to two workers in collection order
    (`--no-loadscope-reorder`): started last, the spark-submit file (two tests, five minutes) ran alone
    for its last minutes while the other worker had finished."""
    items[:] = sorted(items, key=lambda item: -getattr(item.module, "FILE_SECONDS", 0))


def suite_overrides(root: Path, name: str, *overrides: str) -> list[str]:
    """`--set` values whose folders live under `root` and whose databases are `name` and `name`_raw."""
    return [
        *SUITE_OVERRIDES,
        f"storage.warehouse_dir={root / 'warehouse'}",
        f"storage.model_dir={root / 'models'}",
        f"storage.cache_dir={root / 'cache'}",
        f"storage.database={name}",
        f"input.database={name}_raw",
        *overrides,
    ]


def suite_config(root: Path, name: str, *overrides: str) -> SeglibConfig:
    """Config whose folders live under `root` and whose databases are `name` and `name`_raw."""
    return load_config(None, suite_overrides(root, name, *overrides))


def horovod_ranks() -> list[psutil.Process]:
    """The Horovod rank processes that this test process started (Spark tasks launch them), directly or
    through a `seg` process it ran. Ranks get their driver's environment, so the pytest-xdist worker's
    name tells them from the ranks of a test running beside this one in another worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    ranks = []
    for process in psutil.process_iter(["cmdline"]):
        if "horovod.spark.task.gloo_exec_fn" not in " ".join(process.info["cmdline"] or []):
            continue
        try:
            if process.environ().get("PYTEST_XDIST_WORKER") == worker:
                ranks.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # ended since the listing
    return ranks


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    # Under pytest-xdist every worker opens its own session. The first session of a fresh machine
    # downloads the Delta jars into the Ivy cache, which does not lock against a second download of the
    # same files: the workers open their sessions one at a time (the lock lives in the folder that all
    # workers' temporary folders share).
    with (tmp_path_factory.getbasetemp().parent / "spark-session.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        session = open_session(load_config(None, [*SUITE_OVERRIDES, f"storage.warehouse_dir={warehouse}"]))
        fcntl.flock(lock, fcntl.LOCK_UN)
    yield session
    session.stop()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., SeglibConfig]:
    """Config with this test's own folders and database names (the catalog is shared by the session)."""

    def build(*overrides: str) -> SeglibConfig:
        return suite_config(tmp_path, f"seg_test_{next(_database_numbers)}", *overrides)

    return build
