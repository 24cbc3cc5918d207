"""One Spark session for the whole suite; every test gets its own warehouse folders and databases."""

from __future__ import annotations

import itertools
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
    """The Horovod rank processes running on this machine (Spark tasks launch them)."""
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if "horovod.spark.task.gloo_exec_fn" in " ".join(process.info["cmdline"] or [])
    ]


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = open_session(load_config(None, [*SUITE_OVERRIDES, f"storage.warehouse_dir={warehouse}"]))
    yield session
    session.stop()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., SeglibConfig]:
    """Config with this test's own folders and database names (the catalog is shared by the session)."""

    def build(*overrides: str) -> SeglibConfig:
        return suite_config(tmp_path, f"seg_test_{next(_database_numbers)}", *overrides)

    return build
